//! The secrets check: secret parameters refused in plain metadata, and never shown in
//! `Debug`, in errors or in logs, whether the source refuses the credential or is down.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use futures::StreamExt;
use keda_operator::params::ParamError;
use keda_operator::scalers::ScalerError;

use crate::checks::{Problems, Suite, prepare_and_read};
use crate::fixtures::{Fixture, SecretCase};
use crate::sources::{closed_addr, services};
use crate::trigger::Trigger;

impl Suite<'_> {
    pub(crate) async fn secrets(
        &self,
        fixture: &dyn Fixture,
        trigger_type: &'static str,
    ) -> Problems {
        let mut problems = Problems::default();
        let Some(source) = fixture.start().await else {
            return problems;
        };
        let logs = Logs::capture();
        tracing::info!("{CAPTURE_CONTROL}");
        source.refuse();
        let down = closed_addr();
        let refusing = fixture.secrets(source.addr());
        let unreachable = fixture.secrets(down);
        for (case, case_down) in refusing.iter().zip(&unreachable) {
            let name = case.name;
            let trigger = Trigger::new(fixture, trigger_type, 0, source.addr()).with_secret(case);
            let in_metadata = trigger.clone().secret_in_metadata(name);
            if !case.metadata_allowed {
                let built = in_metadata
                    .as_ref()
                    .map(|t| self.build(t, &services(source.addr())));
                let expected = ScalerError::Param(ParamError::SecretInMetadata {
                    name: name.to_owned(),
                });
                match built {
                    Some(Ok(Err(error))) => {
                        problems.expect(error == expected, || {
                            format!("{name} in plain metadata: {error}, expected {expected:?}")
                        });
                        let text = error.to_string();
                        problems.expect(
                            case.tells.iter().all(|t| !text.contains(t.as_str())),
                            || format!("{name} in plain metadata: the refusal shows it: {text}"),
                        );
                    }
                    Some(Ok(Ok(_))) => problems.push(format!("{name} in plain metadata: built")),
                    Some(Err(panic)) => problems.push(format!("{name} in plain metadata: {panic}")),
                    None => problems.push(format!("{name} is not an authentication parameter")),
                }
            }
            let what = format!("{name}, refused by the source");
            self.secret_not_shown(&mut problems, &logs, &trigger, source.addr(), case, &what)
                .await;
            if let Some(in_metadata) = in_metadata.filter(|_| case.metadata_allowed) {
                let what = format!("{name} in plain metadata, refused by the source");
                let addr = source.addr();
                self.secret_not_shown(&mut problems, &logs, &in_metadata, addr, case, &what)
                    .await;
            }
            if case.reaches_source {
                problems.expect(source.seen().contains(case.tells[0].as_str()), || {
                    format!("control: {name} never reached the source, so it was not used")
                });
            }
            let trigger = Trigger::new(fixture, trigger_type, 0, down).with_secret(case_down);
            let what = format!("{name}, nothing listening");
            self.secret_not_shown(&mut problems, &logs, &trigger, down, case_down, &what)
                .await;
        }

        let text = logs.text();
        problems.expect(text.contains(CAPTURE_CONTROL), || {
            "control: the log capture misses events".to_owned()
        });
        for case in refusing.iter().chain(&unreachable) {
            for tell in &case.tells {
                problems.expect(!text.contains(tell.as_str()), || {
                    format!("{} shows up in the logs: {tell}", case.name)
                });
            }
        }
        problems
    }

    /// Builds the trigger with the secret and fails a read against `addr` (a source that
    /// refuses the credential, or nothing); the secret must show in neither `Debug` nor the
    /// errors; push streams that fail must be logged (and the logs are checked at the end).
    async fn secret_not_shown(
        &self,
        problems: &mut Problems,
        logs: &Logs,
        trigger: &Trigger,
        addr: SocketAddr,
        case: &SecretCase,
        what: &str,
    ) {
        let scaler = match self.built(trigger, &services(addr)) {
            Ok(scaler) => scaler,
            Err(e) => {
                problems.push(format!("{what}: {e}"));
                return;
            }
        };
        let mut shown = vec![("Debug of the scaler", format!("{scaler:?}"))];
        match prepare_and_read(scaler.as_ref()).await {
            Err(error) => shown.push(("the read error", format!("{error} {error:?}"))),
            Ok(readings) => problems.push(format!("{what}: read {readings:?}")),
        }
        // Clients made on first use are part of the scaler too.
        shown.push(("Debug of the scaler after a read", format!("{scaler:?}")));
        if let Some(mut pushes) = scaler.activity_pushes() {
            // The first attempt to open the stream fails, and is logged.
            let logged = || logs.text().matches("StreamIsActive stream").count();
            let before = logged();
            let deadline = Instant::now() + Duration::from_secs(5);
            while logged() == before && Instant::now() < deadline {
                let _ = tokio::time::timeout(Duration::from_millis(20), pushes.next()).await;
            }
            problems.expect(logged() > before, || {
                format!("control: {what}: the failing push stream was not logged")
            });
        }
        for (place, text) in &shown {
            for tell in &case.tells {
                problems.expect(!text.contains(tell.as_str()), || {
                    format!("{what}: {} shows up in {place}: {text}", case.name)
                });
            }
        }
    }
}

/// An event every capture must hold.
const CAPTURE_CONTROL: &str = "compliance: log capture control";

/// Every event of every crate and level (and `log` records) emitted on this thread while it
/// lives: with the test's current-thread runtime, that is the test and every task it spawned.
struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _scope: tracing::subscriber::DefaultGuard,
}

/// Appends to a capture's buffer.
struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Self {
        static LOG_BRIDGE: Once = Once::new();
        LOG_BRIDGE.call_once(|| {
            // Installs the `log` bridge; events go to each thread's own subscriber.
            use tracing_subscriber::util::SubscriberInitExt as _;
            let _ = tracing_subscriber::registry().try_init();
        });
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(writer.clone()))
            .finish();
        Self {
            buffer,
            _scope: tracing::subscriber::set_default(subscriber),
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().unwrap()).into_owned()
    }
}
