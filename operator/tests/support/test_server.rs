//! A server started by `external-scalers/scripts/test-server` for the life of a test: its
//! ports are read from the script's `ready` line, and dropping the guard stops it (the script
//! stops when its stdin closes, and its process group is signalled in case it hangs).
//!
//! For the end-to-end scenarios against a real cluster (`KEDA_E2E_KUBECONFIG` set), the
//! servers listen on every address of this machine (`KEDA_TEST_SERVER_BIND=0.0.0.0`) and
//! announce `KEDA_E2E_SOURCE_HOST` (`KEDA_TEST_SERVER_ANNOUNCE`), so that the operator in the
//! cluster reaches them; either variable set by hand wins. The `ready` line keeps giving
//! addresses on loopback, for the test itself.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// A running test server.
pub(crate) struct TestServer {
    child: Child,
    values: HashMap<String, String>,
}

impl TestServer {
    /// Starts a server of `kind` (see the script's header) and waits until it is ready.
    #[allow(
        dead_code,
        reason = "not every test file starts servers without arguments"
    )]
    pub(crate) fn start(kind: &str) -> Self {
        Self::start_with(kind, &[])
    }

    /// Starts a server of `kind` with the arguments the kind takes (`redis-tls DIR`).
    pub(crate) fn start_with(kind: &str, args: &[&str]) -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../external-scalers/scripts/test-server"
        );
        let script = std::path::Path::new(script);
        let script = if script.exists() {
            script.to_path_buf()
        } else {
            // From the sandbox crate, one level deeper.
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../external-scalers/scripts/test-server")
        };
        let mut command = Command::new(script);
        if std::env::var_os("KEDA_E2E_KUBECONFIG").is_some() {
            if std::env::var_os("KEDA_TEST_SERVER_BIND").is_none() {
                command.env("KEDA_TEST_SERVER_BIND", "0.0.0.0");
            }
            if let (None, Some(host)) = (
                std::env::var_os("KEDA_TEST_SERVER_ANNOUNCE"),
                std::env::var_os("KEDA_E2E_SOURCE_HOST"),
            ) {
                command.env("KEDA_TEST_SERVER_ANNOUNCE", host);
            }
        }
        let mut child = command
            .arg(kind)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let Some(rest) = line.trim().strip_prefix("ready ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("test-server {kind} did not start (its log is on stderr above)");
        };
        let values = rest
            .split_whitespace()
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { child, values }
    }

    /// A value of the `ready` line (`client`, `monitoring`, ...).
    pub(crate) fn get(&self, key: &str) -> &str {
        self.values
            .get(key)
            .unwrap_or_else(|| panic!("the test server gave no {key}: {:?}", self.values))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Closing stdin stops the script, which stops its servers.
        drop(self.child.stdin.take());
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.wait();
    }
}
