//! A moto S3 server on 127.0.0.1 (from target/pyenv, installed by the test command)
//! and the environment that points riskstrat at it: for tests/object_stores.rs and
//! tests/cluster.rs.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command};

/// The secret the tests give riskstrat: it must never appear in any output.
pub const SECRET: &str = "moto-test-secret-Zq8vPp3LmT5wR1";

/// A port on 127.0.0.1 that nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait up to 10 s for an emulator to accept connections.
pub fn wait_for(what: &str, port: u16) {
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("{what} did not start on port {port}");
}

/// A moto S3 server on 127.0.0.1, stopped when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    /// `auth`: make moto check credentials (it accepts any by default).
    pub fn start(auth: bool) -> Moto {
        let python = std::env::var("RISKSTRAT_PYTHON").unwrap_or_else(|_| {
            panic!("RISKSTRAT_PYTHON is not set: run ./scripts/test.sh, which installs moto into target/pyenv")
        });
        let server = Path::new(&python).with_file_name("moto_server");
        let port = free_port();
        let mut cmd = Command::new(&server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start it ({e})", server.display()));
        let moto = Moto { child, port };
        wait_for("moto", port);
        moto
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Make a bucket and put files in it (moto takes unsigned requests).
    pub fn put(&self, bucket: &str, files: &[(String, Vec<u8>)]) {
        let base = format!("{}/{bucket}", self.endpoint());
        // The bucket (made once; moto may still be starting its handlers).
        for attempt in 0.. {
            match ureq::put(&base).send(&[][..]) {
                Ok(_) | Err(ureq::Error::StatusCode(409)) => break,
                Err(e) if attempt == 50 => panic!("making bucket {bucket}: {e}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        for (key, bytes) in files {
            ureq::put(&format!("{base}/{key}"))
                .send(&bytes[..])
                .unwrap_or_else(|e| panic!("putting {key}: {e}"));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// riskstrat with the S3 settings of the environment pointed at `endpoint`, and the
/// cloud metadata endpoints at a closed port, so nothing ever leaves the machine.
pub fn with_s3(cmd: &mut Command, endpoint: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", "riskstrat-test")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")
        .env("IDENTITY_ENDPOINT", "http://127.0.0.1:9")
        .env("GCE_METADATA_HOST", "127.0.0.1:9");
}
