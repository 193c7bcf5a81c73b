//! External metric names: `s<trigger index>-<scaler-specific name>`, as KEDA spells them.
//!
//! HPAs, dashboards and alerts refer to these names, so they must match KEDA's exactly.

use std::fmt::Write as _;

/// Replaces the characters KEDA's `NormalizeString` replaces (`/ . : % ( )`) with `-`;
/// case is kept.
pub fn normalize(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '/' | '.' | ':' | '%' | '(' | ')' => '-',
            c => c,
        })
        .collect()
}

/// `s<index>-<base>`: the name a trigger's external metric has in the HPA.
pub fn external(index: usize, base: &str) -> String {
    format!("s{index}-{base}")
}

/// `s<index>-<normalize(base)>`: most scalers normalise their part of the name.
pub fn normalized(index: usize, base: &str) -> String {
    external(index, &normalize(base))
}

/// Go's `url.QueryEscape`, which several scalers apply before normalising (RabbitMQ queue names,
/// Beanstalkd tubes): everything but `A-Z a-z 0-9 - _ . ~` is `%XX`, and a space is `+`.
pub fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(byte));
            }
            b' ' => out.push('+'),
            other => {
                let _ = write!(out, "%{other:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_keda() {
        assert_eq!(
            normalized(1, &format!("rabbitmq-{}", query_escape("namespace/name"))),
            "s1-rabbitmq-namespace-2Fname"
        );
        assert_eq!(normalized(0, "metric-api-a.b.c"), "s0-metric-api-a-b-c");
        assert_eq!(normalized(2, "x(y):z%"), "s2-x-y--z-");
        assert_eq!(external(3, "Keep.Case"), "s3-Keep.Case");
        assert_eq!(query_escape("a b~c"), "a+b~c");
    }
}
