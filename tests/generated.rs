//! Shell completions and man pages of both binaries, generated from their
//! clap definitions: each shell's script is accepted by that shell's own
//! syntax check where the shell is installed (bash always is) and names every
//! command; each man page is roff with its section, listing every command;
//! `man` stays out of `--help`.

use std::process::Command;

use jitssh_e2e::bin;

/// Each binary, its man section, and commands its outputs must name.
const BINARIES: [(&str, &str, [&str; 8]); 2] = [
    (
        "jitssh",
        "1",
        [
            "login",
            "status",
            "logout",
            "config",
            "ensure",
            "elevate",
            "doctor",
            "completions",
        ],
    ),
    (
        "jitssh-ca",
        "8",
        [
            "init",
            "serve",
            "dev",
            "audit",
            "revoke",
            "elevation",
            "login-name",
            "completions",
        ],
    ),
];

fn run(name: &str, args: &[&str]) -> String {
    let out = Command::new(bin(name))
        .args(args)
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn completions_for_every_shell_parse_and_name_every_command() {
    for (name, _, commands) in BINARIES {
        for shell in ["bash", "zsh", "fish"] {
            let script = run(name, &["completions", shell]);
            for c in commands {
                assert!(script.contains(c), "{name} {shell}: {c} missing");
            }
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("completion");
            std::fs::write(&file, &script).unwrap();
            match Command::new(shell).arg("-n").arg(&file).output() {
                Ok(out) => assert!(
                    out.status.success(),
                    "{name}: {shell} -n: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                // zsh and fish are optional on the machine; bash is not.
                Err(e) => assert!(shell != "bash", "bash: {e}"),
            }
        }
    }
}

#[test]
fn man_pages_are_roff_naming_every_command() {
    for (name, section, commands) in BINARIES {
        let page = run(name, &["man"]).replace("\\-", "-");
        assert!(
            page.contains(&format!(".TH {name} {section}")),
            "{name}: {}",
            &page[..200.min(page.len())]
        );
        for c in commands {
            assert!(page.contains(c), "{name}: {c} missing");
        }
        assert!(
            !run(name, &["--help"]).contains("\n  man "),
            "{name}: man is hidden"
        );
    }
}
