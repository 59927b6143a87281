//! The `~/.ssh/config` block printed by `jitssh config`.

use std::time::Duration;

/// Everything the block depends on.
#[derive(Clone, Debug)]
pub struct BlockSpec<'a> {
    /// Absolute path of the `jitssh` binary.
    pub exe: &'a str,
    pub profile: &'a str,
    pub ca: Option<&'a str>,
    /// ssh_config patterns (spaces or commas between them).
    pub hosts: &'a str,
    pub bastion: Option<&'a str>,
    pub min_left: Duration,
    /// The jitssh known_hosts file, as written in ssh_config (`~/...`).
    pub known_hosts: &'a str,
    /// The local copy of the CA's host KRL, for `RevokedHostKeys`. Only set
    /// when the file exists: ssh refuses every host if it cannot read it.
    pub revoked_host_keys: Option<&'a str>,
    /// Key file when the last login wrote files instead of using the agent.
    pub identity_file: Option<&'a str>,
}

/// Quote a value for ssh_config when it has spaces; `%` is ssh's token character.
fn config_word(s: &str) -> String {
    let s = s.replace('%', "%%");
    if s.contains([' ', '\t']) {
        format!("\"{s}\"")
    } else {
        s
    }
}

/// Quote a word for the POSIX shell ssh runs `exec` with.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn compact(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) && s > 0 {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) && s > 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Render the block.
pub fn render(spec: &BlockSpec<'_>) -> String {
    let mut patterns: Vec<String> = spec
        .hosts
        .split([',', ' '])
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    if patterns.is_empty() {
        patterns.push("*".into());
    }
    // The jump host must not jump through itself.
    if let Some(bastion) = spec.bastion {
        let host = bastion
            .rsplit('@')
            .next()
            .unwrap_or(bastion)
            .split(':')
            .next()
            .unwrap_or(bastion);
        patterns.push(format!("!{host}"));
    }
    let mut command = vec![shell_word(spec.exe)];
    if spec.profile != crate::profile::DEFAULT_PROFILE {
        command.extend(["--profile".to_owned(), shell_word(spec.profile)]);
    }
    command.extend([
        "ensure".to_owned(),
        "--quiet".to_owned(),
        "--min-left".to_owned(),
        compact(spec.min_left),
    ]);
    let command = command.join(" ").replace('%', "%%").replace('"', "\\\"");

    let mut out = String::new();
    out.push_str(&format!(
        "# jitssh: short-lived SSH certificates{}{}.\n",
        spec.ca.map(|c| format!(" from {c}")).unwrap_or_default(),
        if spec.profile == crate::profile::DEFAULT_PROFILE {
            String::new()
        } else {
            format!(" (profile {})", spec.profile)
        }
    ));
    out.push_str(&format!(
        "# Before ssh connects to these hosts, `jitssh ensure` renews the certificate\n\
         # when less than {} is left (silently while the sign-in is cached).\n",
        compact(spec.min_left)
    ));
    out.push_str(&format!(
        "Match host \"{}\" exec \"{command}\"\n",
        patterns.join(",")
    ));
    out.push_str(&format!("Host {}\n", patterns.join(" ")));
    out.push_str(&format!(
        "    UserKnownHostsFile {} ~/.ssh/known_hosts\n",
        config_word(spec.known_hosts)
    ));
    if let Some(krl) = spec.revoked_host_keys {
        out.push_str(&format!("    RevokedHostKeys {}\n", config_word(krl)));
    }
    if let Some(bastion) = spec.bastion {
        out.push_str(&format!("    ProxyJump {}\n", config_word(bastion)));
    }
    if let Some(key) = spec.identity_file {
        out.push_str(&format!("    IdentityFile {}\n", config_word(key)));
        out.push_str(&format!(
            "    CertificateFile {}\n",
            config_word(&format!("{key}-cert.pub"))
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn spec() -> BlockSpec<'static> {
        BlockSpec {
            exe: "/usr/local/bin/jitssh",
            profile: "default",
            ca: Some("https://ca.example.com"),
            hosts: "*",
            bastion: None,
            min_left: Duration::from_secs(300),
            known_hosts: "~/.ssh/jitssh/known_hosts",
            revoked_host_keys: None,
            identity_file: None,
        }
    }

    #[test]
    fn default_block() {
        assert_eq!(
            render(&spec()),
            "# jitssh: short-lived SSH certificates from https://ca.example.com.\n\
             # Before ssh connects to these hosts, `jitssh ensure` renews the certificate\n\
             # when less than 5m is left (silently while the sign-in is cached).\n\
             Match host \"*\" exec \"/usr/local/bin/jitssh ensure --quiet --min-left 5m\"\n\
             Host *\n\
             \x20   UserKnownHostsFile ~/.ssh/jitssh/known_hosts ~/.ssh/known_hosts\n"
        );
    }

    #[test]
    fn bastion_profile_and_files() {
        let block = render(&BlockSpec {
            exe: "/opt/my tools/jitssh",
            profile: "prod",
            hosts: "*.prod.example.com, db-*",
            bastion: Some("ops@bastion.example.com:2222"),
            identity_file: Some("~/.ssh/jitssh/id_jitssh_prod"),
            min_left: Duration::from_secs(90),
            ..spec()
        });
        assert!(block.contains("(profile prod)"), "{block}");
        assert!(
            block.contains(
                "Match host \"*.prod.example.com,db-*,!bastion.example.com\" exec \"'/opt/my tools/jitssh' --profile prod ensure --quiet --min-left 90s\"\n"
            ),
            "{block}"
        );
        assert!(
            block.contains("Host *.prod.example.com db-* !bastion.example.com\n"),
            "{block}"
        );
        assert!(
            block.contains("    ProxyJump ops@bastion.example.com:2222\n"),
            "{block}"
        );
        assert!(
            block.contains("    IdentityFile ~/.ssh/jitssh/id_jitssh_prod\n"),
            "{block}"
        );
        assert!(
            block.contains("    CertificateFile ~/.ssh/jitssh/id_jitssh_prod-cert.pub\n"),
            "{block}"
        );
    }

    #[test]
    fn revoked_host_keys_only_when_given() {
        let block = render(&BlockSpec {
            revoked_host_keys: Some("~/.ssh/jitssh/revoked_hosts.krl"),
            ..spec()
        });
        assert!(
            block.ends_with(
                "    UserKnownHostsFile ~/.ssh/jitssh/known_hosts ~/.ssh/known_hosts\n\
                 \x20   RevokedHostKeys ~/.ssh/jitssh/revoked_hosts.krl\n"
            ),
            "{block}"
        );
        assert!(!render(&spec()).contains("RevokedHostKeys"));
    }

    #[test]
    fn percent_signs_are_escaped() {
        let block = render(&BlockSpec {
            exe: "/home/a%b/jitssh",
            ..spec()
        });
        assert!(
            block.contains("exec \"'/home/a%%b/jitssh' ensure"),
            "{block}"
        );
    }
}
