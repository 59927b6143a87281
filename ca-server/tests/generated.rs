//! `jitssh-ca`'s shell completions and man page, generated from the clap definitions:
//! each shell's script is accepted by that shell's own syntax check where the
//! shell is installed (bash always is), and names every command; the man
//! page is roff that `man` renders, listing every command.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

const COMMANDS: [&str; 8] = [
    "init",
    "serve",
    "dev",
    "audit",
    "revoke",
    "elevation",
    "login-name",
    "completions",
];

fn jitssh_ca(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jitssh-ca"))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_for_every_shell_parse_and_name_every_command() {
    for (shell, check) in [("bash", "bash"), ("zsh", "zsh"), ("fish", "fish")] {
        let script = jitssh_ca(&["completions", shell]);
        for c in COMMANDS {
            assert!(script.contains(c), "{shell}: {c} missing");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jitssh-ca.completion");
        std::fs::write(&file, &script).unwrap();
        let syntax = Command::new(check).arg("-n").arg(&file).output();
        match syntax {
            Ok(out) => assert!(
                out.status.success(),
                "{shell} -n: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            // zsh and fish are optional on the machine; bash is not.
            Err(e) => assert!(shell != "bash", "bash: {e}"),
        }
    }
}

#[test]
fn the_man_page_is_roff_naming_every_command() {
    let page = jitssh_ca(&["man"]);
    assert!(
        page.contains(".TH jitssh-ca 8"),
        "{}",
        &page[..200.min(page.len())]
    );
    let page = page.replace("\\-", "-");
    for c in COMMANDS {
        assert!(page.contains(c), "{c} missing");
    }
    // Hidden: not in the help, so not a command people are shown.
    assert!(!jitssh_ca(&["--help"]).contains("\n  man "));
}
