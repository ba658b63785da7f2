//! docs/cli-reference.md is the `--help` text of every command, generated from clap; this test
//! fails when the two drift apart. Regenerate with
//! `EHUB_UPDATE_DOCS=1 cargo test -p ehub-cli --test cli_reference`.

use std::process::Command;

const COMMANDS: &[&[&str]] = &[
    &[],
    &["serve"],
    &["info"],
    &["send"],
    &["receive"],
    &["checkpoints", "list"],
    &["export"],
    &["import"],
    &["completions"],
    &["man"],
    &["bench", "send"],
    &["bench", "receive"],
    &["bench", "e2e"],
    &["bench", "process"],
    &["bench", "idle-links"],
];

fn reference() -> String {
    let mut out = String::from(
        "# CLI reference\n\nGenerated from the `ehub` binary's own help (`ehub <command> --help`); a test keeps it\n\
         current (`EHUB_UPDATE_DOCS=1 cargo test -p ehub-cli --test cli_reference` regenerates it).\n\
         The guide with examples is [cli.md](cli.md).\n",
    );
    for cmd in COMMANDS {
        let help = Command::new(env!("CARGO_BIN_EXE_ehub"))
            .args(*cmd)
            .arg("--help")
            .env_remove("EVENTHUB_CONNECTION_STRING")
            .env_remove("AZURE_STORAGE_CONNECTION_STRING")
            .env_remove("EHUB_LOG")
            .env_remove("COLUMNS")
            .output()
            .unwrap();
        assert!(help.status.success(), "ehub {} --help failed", cmd.join(" "));
        let title = if cmd.is_empty() { "ehub".to_owned() } else { format!("ehub {}", cmd.join(" ")) };
        out.push_str(&format!("\n## `{title}`\n\n```text\n{}```\n", String::from_utf8(help.stdout).unwrap()));
    }
    out
}

#[test]
fn the_cli_reference_matches_the_binary() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/cli-reference.md");
    let want = reference();
    if std::env::var_os("EHUB_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/cli-reference.md is out of date with the binary's --help: run \
         `EHUB_UPDATE_DOCS=1 cargo test -p ehub-cli --test cli_reference` and commit the result"
    );
}
