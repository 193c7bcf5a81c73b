//! `cron`: a fixed replica count inside recurring time windows.
//!
//! A window opens at each occurrence of `start` and closes at the next occurrence of `end`, both
//! read in `timezone`. The trigger is active when, looking forward from now, `end` comes no later
//! than `start`: the last `start` has happened and its `end` has not. While active the metric is
//! `desiredReplicas` against a target of 1 per replica, so the HPA asks for that many; outside
//! the windows the metric is 1.
//!
//! Schedules have five fields (minute, hour, day of month, month, day of week) with the syntax
//! of KEDA's cron library: `*`, `?` (same as `*`), lists, ranges, steps, and month and weekday
//! names. When both day fields are restricted a day matches either of them; when one is
//! unrestricted (`*`, `?`, or a list containing one of them) both must match.

use futures::future::BoxFuture;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use keda_operator_crd::MetricTargetType;

use super::{MetricSpec, Reading, Scaler, ScalerError, Services, TriggerInput};
use crate::metric_name;
use crate::params::{METADATA, ParamError};

crate::parameters! {
    /// The cron schedule on which a window opens: five fields (minute, hour, day of month,
    /// month, day of week), such as `"0 8 * * 1-5"` for 8:00 on weekdays.
    "start": Text, required, [Metadata];
    /// The cron schedule on which a window closes, in the same form as `start` (such as
    /// `"0 18 * * 1-5"`); it must differ from `start`.
    "end": Text, required, [Metadata];
    /// The IANA time zone both schedules are read in, such as `Europe/Berlin` or `Etc/UTC`;
    /// daylight saving changes are followed.
    "timezone": Text, required, [Metadata];
    /// The replica count the trigger asks for while a window is open; a whole number greater
    /// than 0. Outside the windows the trigger is inactive.
    "desiredReplicas": Integer, required, [Metadata];
}

/// The parameters of a `cron` trigger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// `start` (required): the cron schedule on which a window opens, five fields: minute, hour,
    /// day of month, month and day of week, for example `"0 8 * * 1-5"` (8:00 on weekdays).
    pub start: String,
    /// `end` (required): the cron schedule on which a window closes, in the same form as `start`,
    /// for example `"0 18 * * 1-5"`. It must differ from `start`.
    pub end: String,
    /// `timezone` (required): the IANA time zone the schedules are read in, for example
    /// `"Europe/Berlin"` or `"Etc/UTC"`. Daylight saving changes are followed: a window from
    /// 8:00 to 18:00 stays 8:00 to 18:00 local time all year.
    pub timezone: String,
    /// `desiredReplicas` (required): the replica count the trigger asks for inside a window; a
    /// whole number greater than 0.
    pub desired_replicas: i64,
}

/// Reads and checks the metadata of a `cron` trigger, schedules and time zone included; no
/// I/O beyond the time zone database.
pub fn parse(input: &TriggerInput) -> Result<Metadata, ScalerError> {
    let params = &input.params;
    let start = params.require("start", METADATA)?.to_owned();
    let end = params.require("end", METADATA)?.to_owned();
    let timezone = params.require("timezone", METADATA)?.to_owned();
    let desired_replicas = params.int("desiredReplicas", METADATA, None)?;
    let metadata = Metadata {
        start,
        end,
        timezone,
        desired_replicas,
    };
    Schedules::new(&metadata)?;
    if metadata.start == metadata.end {
        return Err(ScalerError::Config(
            "start and end must differ: a window would close as it opens".to_owned(),
        ));
    }
    if metadata.desired_replicas <= 0 {
        return Err(ParamError::invalid(
            "desiredReplicas",
            format!("{} must be greater than 0", metadata.desired_replicas),
        )
        .into());
    }
    Ok(metadata)
}

/// Builds a `cron` trigger.
pub fn build(input: &TriggerInput, _: &Services) -> Result<Box<dyn Scaler>, ScalerError> {
    let target_type = super::external_target_type(input)?;
    let metadata = parse(input)?;
    let schedules = Schedules::new(&metadata)?;
    Ok(Box::new(CronScaler {
        name: metric_name(input.index, &metadata),
        target_type,
        metadata,
        schedules,
    }))
}

/// `s<index>-cron-<timezone>-<start>-<end>`, with the schedules' spaces removed and `*`, `/`
/// and `?` spelled `x`, `Sl` and `Qm`, then normalised: `s0-cron-Etc-UTC-00xxThu-5923xxThu`.
fn metric_name(index: usize, metadata: &Metadata) -> String {
    fn spell(schedule: &str) -> String {
        schedule
            .replace(' ', "")
            .replace('*', "x")
            .replace('/', "Sl")
            .replace('?', "Qm")
    }
    metric_name::normalized(
        index,
        &format!(
            "cron-{}-{}-{}",
            metadata.timezone,
            spell(&metadata.start),
            spell(&metadata.end)
        ),
    )
}

/// The start and end schedules, bound to the time zone.
#[derive(Clone, Debug)]
struct Schedules {
    start: cronexpr::Crontab,
    end: cronexpr::Crontab,
}

impl Schedules {
    fn new(metadata: &Metadata) -> Result<Self, ScalerError> {
        if TimeZone::get(&metadata.timezone).is_err() {
            return Err(ParamError::invalid(
                "timezone",
                format!(
                    "{:?} is not a time zone of the IANA database (such as Europe/Berlin)",
                    metadata.timezone
                ),
            )
            .into());
        }
        Ok(Self {
            start: schedule("start", &metadata.start, &metadata.timezone)?,
            end: schedule("end", &metadata.end, &metadata.timezone)?,
        })
    }

    /// Whether `now` lies inside a window: the next `end` is no later than the next `start`.
    fn is_active_at(&self, now: Timestamp) -> Result<bool, ScalerError> {
        let next = |which: &str, crontab: &cronexpr::Crontab| {
            crontab
                .find_next(now)
                .map(|zoned| zoned.timestamp())
                .map_err(|e| ScalerError::Source(format!("no next {which} time after {now}: {e}")))
        };
        Ok(next("end", &self.end)? <= next("start", &self.start)?)
    }
}

/// Parses one schedule in `timezone`.
fn schedule(name: &str, text: &str, timezone: &str) -> Result<cronexpr::Crontab, ScalerError> {
    let invalid = |why: &str| -> ScalerError {
        ParamError::invalid(name, format!("{text:?} is not a cron schedule: {why}")).into()
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(invalid(&format!(
            "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
            fields.len()
        )));
    }
    let mut expression = Vec::with_capacity(6);
    for (position, field) in fields.iter().enumerate() {
        if let Some(bad) = field
            .split([',', '-', '/'])
            .find(|part| !plain_field_part(position, part))
        {
            return Err(invalid(&format!("unsupported value {bad:?}")));
        }
        let field = field.replace('?', "*");
        expression.push(if position == 2 || position == 4 {
            day_field(&field, position)
        } else {
            field
        });
    }
    expression.push(timezone.to_owned());
    let crontab = cronexpr::parse_crontab(&expression.join(" ")).map_err(|e| {
        // The library's message spans lines with a caret under the culprit; keep its reason.
        let message = e.to_string();
        let reason = message
            .rsplit_once("^ ")
            .map_or(message.as_str(), |(_, reason)| reason);
        invalid(reason)
    })?;
    // A schedule that fires at all fires within four years of any instant (29 February).
    if crontab.find_next(Timestamp::UNIX_EPOCH).is_err() {
        return Err(invalid("it never fires"));
    }
    Ok(crontab)
}

/// Whether a piece of a field is plain cron: a number, `*`, `?`, or (in the month and weekday
/// fields) a three-letter name. Extensions such as `L`, `W`, `#` and `H` are refused.
fn plain_field_part(position: usize, part: &str) -> bool {
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
    let lower = part.to_ascii_lowercase();
    part.is_empty()
        || part == "*"
        || part == "?"
        || part.bytes().all(|b| b.is_ascii_digit())
        || (position == 3 && MONTHS.contains(&lower.as_str()))
        || (position == 4 && DAYS.contains(&lower.as_str()))
}

/// Rewrites a day-of-month or day-of-week field so that the library decides "either day field
/// matches" versus "both must match" as KEDA's cron library does: a field counts as
/// unrestricted when any list item is `*` (or `*/1`), and a stepped `*/n` counts as restricted.
fn day_field(field: &str, position: usize) -> String {
    let (first, last) = if position == 2 { (1, 31) } else { (0, 6) };
    let items: Vec<&str> = field.split(',').collect();
    if items.iter().any(|item| *item == "*" || *item == "*/1") {
        return "*".to_owned();
    }
    items
        .iter()
        .map(|item| match item.strip_prefix("*/") {
            Some(step) => format!("{first}-{last}/{step}"),
            None => (*item).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A built `cron` trigger.
#[derive(Debug)]
pub struct CronScaler {
    metadata: Metadata,
    schedules: Schedules,
    name: String,
    target_type: MetricTargetType,
}

impl CronScaler {
    /// The reading at `now`: `desiredReplicas` inside a window, 1 outside.
    pub fn reading_at(&self, now: Timestamp) -> Result<Reading, ScalerError> {
        let active = self.schedules.is_active_at(now)?;
        #[expect(
            clippy::cast_precision_loss,
            reason = "replica counts are far below 2^52"
        )]
        let value = if active {
            self.metadata.desired_replicas as f64
        } else {
            1.0
        };
        Ok(Reading { value, active })
    }
}

impl Scaler for CronScaler {
    fn metric_specs(&self) -> Vec<MetricSpec> {
        vec![MetricSpec::External {
            name: self.name.clone(),
            target_type: self.target_type,
            target: 1.0,
        }]
    }

    fn read<'a>(&'a self, metric: &'a str) -> BoxFuture<'a, Result<Reading, ScalerError>> {
        let reading = if metric == self.name {
            self.reading_at(Timestamp::now())
        } else {
            Err(ScalerError::NoSuchMetric(metric.to_owned()))
        };
        Box::pin(std::future::ready(reading))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    fn input(index: usize, metadata: &[(&str, &str)]) -> TriggerInput {
        TriggerInput::new(
            index,
            "cron",
            Params::from_metadata(metadata.iter().copied()),
        )
    }

    fn window(start: &str, end: &str, timezone: &str) -> CronScaler {
        let trigger = input(
            0,
            &[
                ("start", start),
                ("end", end),
                ("timezone", timezone),
                ("desiredReplicas", "10"),
            ],
        );
        let metadata = parse(&trigger).unwrap();
        CronScaler {
            name: metric_name(0, &metadata),
            target_type: MetricTargetType::AverageValue,
            schedules: Schedules::new(&metadata).unwrap(),
            metadata,
        }
    }

    fn at(time: &str) -> Timestamp {
        time.parse().unwrap()
    }

    #[test]
    fn valid_metadata() {
        let cases: &[(&[(&str, &str)], Metadata)] = &[
            (
                &[
                    ("start", "0 0 * * Thu"),
                    ("end", "59 23 * * Thu"),
                    ("timezone", "Etc/UTC"),
                    ("desiredReplicas", "10"),
                ],
                Metadata {
                    start: "0 0 * * Thu".into(),
                    end: "59 23 * * Thu".into(),
                    timezone: "Etc/UTC".into(),
                    desired_replicas: 10,
                },
            ),
            (
                &[
                    ("start", " 30-33 */2 ? JAN-jun mon,Wed "),
                    ("end", "45 * 1,15 * ?"),
                    ("timezone", "Asia/Kolkata"),
                    ("desiredReplicas", "1"),
                ],
                Metadata {
                    start: "30-33 */2 ? JAN-jun mon,Wed".into(),
                    end: "45 * 1,15 * ?".into(),
                    timezone: "Asia/Kolkata".into(),
                    desired_replicas: 1,
                },
            ),
        ];
        for (metadata, expected) in cases {
            assert_eq!(
                parse(&input(0, metadata)).as_ref(),
                Ok(expected),
                "{metadata:?}"
            );
        }
    }

    #[test]
    #[allow(clippy::too_many_lines, reason = "one table of cases")]
    fn invalid_metadata() {
        let valid = [
            ("start", "0 6 * * *"),
            ("end", "0 20 * * *"),
            ("timezone", "Europe/Berlin"),
            ("desiredReplicas", "3"),
        ];
        let with = |key: &str, value: &str| -> Vec<(String, String)> {
            valid
                .iter()
                .map(|(k, v)| {
                    (
                        (*k).to_owned(),
                        if *k == key { value } else { *v }.to_owned(),
                    )
                })
                .collect()
        };
        let cases: &[(&str, &str, &str)] = &[
            (
                "start",
                "",
                "missing required parameter \"start\" in [triggerMetadata]",
            ),
            (
                "end",
                " ",
                "missing required parameter \"end\" in [triggerMetadata]",
            ),
            (
                "timezone",
                "",
                "missing required parameter \"timezone\" in [triggerMetadata]",
            ),
            (
                "desiredReplicas",
                "",
                "missing required parameter \"desiredReplicas\" in [triggerMetadata]",
            ),
            (
                "desiredReplicas",
                "ten",
                "parameter \"desiredReplicas\": \"ten\" is not an integer",
            ),
            (
                "desiredReplicas",
                "0",
                "parameter \"desiredReplicas\": 0 must be greater than 0",
            ),
            (
                "timezone",
                "Mars/Olympus",
                "parameter \"timezone\": \"Mars/Olympus\" is not a time zone of the IANA database \
                 (such as Europe/Berlin)",
            ),
            (
                "start",
                "0 6 * *",
                "parameter \"start\": \"0 6 * *\" is not a cron schedule: expected 5 fields \
                 (minute hour day-of-month month day-of-week), found 4",
            ),
            (
                "start",
                "0 0 6 * * *",
                "parameter \"start\": \"0 0 6 * * *\" is not a cron schedule: expected 5 fields \
                 (minute hour day-of-month month day-of-week), found 6",
            ),
            (
                "start",
                "@daily",
                "parameter \"start\": \"@daily\" is not a cron schedule: expected 5 fields \
                 (minute hour day-of-month month day-of-week), found 1",
            ),
            (
                "start",
                "-30 * * * *",
                "parameter \"start\": \"-30 * * * *\" is not a cron schedule: malformed expression",
            ),
            (
                "end",
                "50 * * -3 *",
                "parameter \"end\": \"50 * * -3 *\" is not a cron schedule: malformed expression",
            ),
            (
                "end",
                "0 25 * * *",
                "parameter \"end\": \"0 25 * * *\" is not a cron schedule: value must be in range \
                 0..=23; found 25",
            ),
            (
                "end",
                "0 0 30 2 *",
                "parameter \"end\": \"0 0 30 2 *\" is not a cron schedule: it never fires",
            ),
            (
                "end",
                "0 12 L * *",
                "parameter \"end\": \"0 12 L * *\" is not a cron schedule: unsupported value \"L\"",
            ),
            (
                "end",
                "0 12 * * 5#3",
                "parameter \"end\": \"0 12 * * 5#3\" is not a cron schedule: unsupported value \
                 \"5#3\"",
            ),
            (
                "end",
                "0 6 * * *",
                "start and end must differ: a window would close as it opens",
            ),
        ];
        for (key, value, expected) in cases {
            let metadata = with(key, value);
            let params =
                Params::from_metadata(metadata.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            let err = parse(&TriggerInput::new(0, "cron", params)).unwrap_err();
            assert_eq!(err.to_string(), *expected, "{key}={value:?}");
        }
    }

    #[test]
    fn names_match_keda() {
        let cases = [
            (
                0,
                "0 0 * * Thu",
                "59 23 * * Thu",
                "Etc/UTC",
                "s0-cron-Etc-UTC-00xxThu-5923xxThu",
            ),
            (
                1,
                "0 */2 * * *",
                "0 1-23/2 * * *",
                "Etc/UTC",
                "s1-cron-Etc-UTC-0xSl2xxx-01-23Sl2xxx",
            ),
            (
                2,
                "0 6 ? * 1,3",
                "0 20 ? * 1,3",
                "Europe/Berlin",
                "s2-cron-Europe-Berlin-06Qmx1,3-020Qmx1,3",
            ),
        ];
        for (index, start, end, timezone, expected) in cases {
            let metadata = parse(&input(
                index,
                &[
                    ("start", start),
                    ("end", end),
                    ("timezone", timezone),
                    ("desiredReplicas", "2"),
                ],
            ))
            .unwrap();
            assert_eq!(metric_name(index, &metadata), expected);
        }
    }

    #[test]
    fn a_window_within_a_day_is_active_from_its_start_until_its_end() {
        let scaler = window("0 9 * * *", "0 17 * * *", "Asia/Kolkata");
        // Kolkata is UTC+05:30 all year: 09:00 local is 03:30Z, 17:00 local is 11:30Z.
        let cases = [
            ("2026-05-04T03:29:59Z", false),
            ("2026-05-04T03:30:00Z", true),
            ("2026-05-04T07:00:00Z", true),
            ("2026-05-04T11:29:59Z", true),
            ("2026-05-04T11:30:00Z", false),
            ("2026-05-04T20:00:00Z", false),
        ];
        for (now, active) in cases {
            let expected = Reading {
                value: if active { 10.0 } else { 1.0 },
                active,
            };
            assert_eq!(scaler.reading_at(at(now)), Ok(expected), "at {now}");
        }
    }

    #[test]
    fn a_window_across_midnight() {
        let scaler = window("0 22 * * *", "0 6 * * *", "Etc/UTC");
        let cases = [
            ("2026-05-04T21:59:00Z", false),
            ("2026-05-04T22:00:00Z", true),
            ("2026-05-04T23:30:00Z", true),
            ("2026-05-05T05:59:00Z", true),
            ("2026-05-05T06:00:00Z", false),
            ("2026-05-05T12:00:00Z", false),
        ];
        for (now, active) in cases {
            assert_eq!(
                scaler.schedules.is_active_at(at(now)),
                Ok(active),
                "at {now}"
            );
        }
    }

    #[test]
    fn windows_follow_daylight_saving_time() {
        // 01:00 to 04:00 in Berlin. On 2026-03-29 clocks jump from 02:00 CET to 03:00 CEST, so
        // the window lasts two hours, 00:00Z to 02:00Z; on 2026-10-25 they fall back from 03:00
        // CEST to 02:00 CET and it lasts four, 23:00Z to 03:00Z.
        let scaler = window("0 1 * * *", "0 4 * * *", "Europe/Berlin");
        let cases = [
            ("2026-03-28T23:59:00Z", false),
            ("2026-03-29T00:00:00Z", true),
            ("2026-03-29T01:30:00Z", true),
            ("2026-03-29T01:59:00Z", true),
            ("2026-03-29T02:00:00Z", false),
            ("2026-03-29T02:30:00Z", false),
            ("2026-10-24T22:59:00Z", false),
            ("2026-10-24T23:00:00Z", true),
            ("2026-10-25T02:30:00Z", true),
            ("2026-10-25T02:59:00Z", true),
            ("2026-10-25T03:00:00Z", false),
        ];
        for (now, active) in cases {
            assert_eq!(
                scaler.schedules.is_active_at(at(now)),
                Ok(active),
                "at {now}"
            );
        }
    }

    #[test]
    fn weekday_windows() {
        // 2026-01-01 is a Thursday.
        let scaler = window("0 0 * * Thu", "59 23 * * Thu", "Etc/UTC");
        let cases = [
            ("2025-12-31T23:59:00Z", false),
            ("2026-01-01T00:00:00Z", true),
            ("2026-01-01T23:58:00Z", true),
            ("2026-01-01T23:59:00Z", false),
            ("2026-01-02T12:00:00Z", false),
        ];
        for (now, active) in cases {
            assert_eq!(
                scaler.schedules.is_active_at(at(now)),
                Ok(active),
                "at {now}"
            );
        }
    }

    #[test]
    fn leap_days_fire() {
        let leap = schedule("end", "0 0 29 2 *", "Europe/Berlin").unwrap();
        assert_eq!(
            leap.find_next(at("2026-03-01T00:00:00Z"))
                .unwrap()
                .timestamp(),
            at("2028-02-28T23:00:00Z")
        );
    }

    #[test]
    fn day_fields_combine_as_in_keda() {
        assert_eq!(day_field("*/2", 2), "1-31/2");
        assert_eq!(day_field("1,*", 2), "*");
        assert_eq!(day_field("*/1", 4), "*");
        assert_eq!(day_field("*/3,5", 4), "0-6/3,5");
        assert_eq!(day_field("1-5", 4), "1-5");
        // Restricted day of month and day of week: either matches. 2026-01-06 is a Tuesday;
        // the next day that is odd or a Monday is Wednesday the 7th.
        let either = schedule("start", "0 12 */2 * 1", "Etc/UTC").unwrap();
        assert_eq!(
            either
                .find_next(at("2026-01-06T13:00:00Z"))
                .unwrap()
                .timestamp(),
            at("2026-01-07T12:00:00Z")
        );
        // An unrestricted day of month: both must match, so only Mondays (the 12th).
        let both = schedule("start", "0 12 ? * 1", "Etc/UTC").unwrap();
        assert_eq!(
            both.find_next(at("2026-01-06T13:00:00Z"))
                .unwrap()
                .timestamp(),
            at("2026-01-12T12:00:00Z")
        );
    }

    #[tokio::test]
    async fn spec_target_and_reads() {
        let services = Services::new(
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap(),
        );
        let mut value_input = input(
            4,
            &[
                ("start", "0 0 * * *"),
                ("end", "59 23 * * *"),
                ("timezone", "Etc/UTC"),
                ("desiredReplicas", "7"),
            ],
        );
        value_input.metric_type = MetricTargetType::Value;
        let scaler = build(&value_input, &services).unwrap();
        assert_eq!(
            scaler.metric_specs(),
            vec![MetricSpec::External {
                name: "s4-cron-Etc-UTC-00xxx-5923xxx".into(),
                target_type: MetricTargetType::Value,
                target: 1.0,
            }]
        );
        // Every minute but 23:59 is inside the window; a read is either 7 (active) or 1.
        let reading = scaler.read("s4-cron-Etc-UTC-00xxx-5923xxx").await.unwrap();
        let expected = Reading {
            value: if reading.active { 7.0 } else { 1.0 },
            active: reading.active,
        };
        assert_eq!(reading, expected);
        assert_eq!(
            scaler.read("s4-other").await,
            Err(ScalerError::NoSuchMetric("s4-other".into()))
        );

        value_input.metric_type = MetricTargetType::Utilization;
        assert_eq!(
            build(&value_input, &services).unwrap_err().to_string(),
            "metricType 'Utilization' is only supported by the cpu and memory triggers; use \
             'AverageValue' or 'Value'"
        );
    }
}
