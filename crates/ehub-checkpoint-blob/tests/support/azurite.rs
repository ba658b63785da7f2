//! Azurite (Microsoft's storage emulator, from npm, pinned in `interop/azurite`) as a child
//! process on a free port, in memory, killed on drop. `EHUB_AZURITE` overrides the path of its
//! `azurite-blob` script. A missing Azurite fails the test: it is installed by `scripts/test`
//! (or `npm ci --prefix interop/azurite`), never skipped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Azurite {
    child: Child,
    pub port: u16,
}

impl Azurite {
    pub fn start() -> Azurite {
        let script = std::env::var_os("EHUB_AZURITE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../interop/azurite/node_modules/.bin/azurite-blob")
        });
        assert!(
            script.exists(),
            "Azurite is not installed at {}: run `npm ci --prefix interop/azurite` (scripts/test does)",
            script.display()
        );
        let mut child = Command::new(&script)
            .args(["--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence", "--disableTelemetry"])
            .args(["--skipApiVersionCheck", "--silent"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start Azurite");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let port = loop {
            let line = lines.next().expect("Azurite exited before listening").expect("read Azurite's output");
            if let Some(url) = line.split("listens on ").nth(1) {
                break url.trim().rsplit(':').next().unwrap().parse().expect("Azurite's port");
            }
        };
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Azurite { child, port }
    }

    /// A connection string for the development account on this Azurite.
    pub fn connection_string(&self) -> String {
        format!(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={};BlobEndpoint=http://127.0.0.1:{}/devstoreaccount1;",
            ehub_storage_auth::DEV_ACCOUNT_KEY,
            self.port
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
