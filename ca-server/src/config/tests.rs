//! Config files resolved from the `init` template, edited per case.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Invalid(e.to_string()))?;
    Config::resolve(raw, Path::new("/etc/jitssh"))
}

#[test]
fn pkcs11_keys_replace_key_files() {
    let hsm = crate::hsm::Pkcs11Config {
        module: "/usr/lib/softhsm/libsofthsm2.so".into(),
        token_label: "ca \"prod\"".into(),
        pin_file: Some("hsm.pin".into()),
        pin_env: None,
        user_key_label: "u".into(),
        host_key_label: "h".into(),
    };
    let t = template_pkcs11("https://idp.example.com", "jitssh", &hsm);
    assert!(!t.contains("user_key ="), "{t}");
    let c = parse(&t).unwrap();
    let p = c.pkcs11.unwrap();
    assert_eq!(p.token_label, "ca \"prod\"");
    assert_eq!(
        p.pin_file.unwrap(),
        Path::new("/etc/jitssh/hsm.pin"),
        "relative to the config"
    );
    // Files and a token at once, or no PIN source / two: refused.
    let both = t.replace("[ca]\n", "[ca]\nuser_key = \"user_ca\"\n");
    assert!(parse(&both).unwrap_err().to_string().contains("keep one"));
    let no_pin = t.replace("pin_file = \"hsm.pin\"\n", "");
    assert!(parse(&no_pin).unwrap_err().to_string().contains("pin_file"));
    let two = t.replace(
        "pin_file = \"hsm.pin\"\n",
        "pin_file = \"p\"\npin_env = \"X\"\n",
    );
    assert!(parse(&two).is_err());
}

#[test]
fn login_authorization_params_are_served_but_never_jitssh_own() {
    let t = template("https://idp.example.com", "jitssh");
    let with = |extra: &str| {
        parse(&t.replace(
            "scopes = [\"openid\", \"email\", \"profile\", \"groups\", \"offline_access\"]",
            &format!("scopes = [\"openid\", \"offline_access\"]\n{extra}"),
        ))
    };
    let c = with("authorization_params = { access_type = \"offline\", prompt = \"\" }").unwrap();
    let login = c.login.unwrap();
    assert_eq!(login.authorization_params["access_type"], "offline");
    assert_eq!(login.authorization_params["prompt"], "");
    for reserved in RESERVED_AUTHORIZATION_PARAMS {
        let e = with(&format!("authorization_params = {{ {reserved} = \"x\" }}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(reserved) && e.contains("set by jitssh itself"),
            "{e}"
        );
    }
}

#[test]
fn elevation_section_is_checked() {
    let t = template("https://idp.example.com", "jitssh");
    let c = parse(&t).unwrap();
    assert_eq!(c.elevation.pending_timeout.as_secs(), 3600);
    assert_eq!(c.elevation.max_grant.as_secs(), 8 * 3600);
    assert!(c.elevation.webhook.is_none());
    let with = |extra: &str| {
        parse(&t.replace(
            "max_grant = \"8h\"",
            &format!("max_grant = \"8h\"\n{extra}"),
        ))
    };
    let c =
        with("webhook_url = \"https://hooks.example.com/x\"\nwebhook_secret_file = \"s\"").unwrap();
    let hook = c.elevation.webhook.unwrap();
    assert_eq!(hook.url.as_str(), "https://hooks.example.com/x");
    assert!(hook.secret_file.unwrap().is_absolute());
    for bad in [
        "webhook_url = \"not a url\"",
        "webhook_url = \"ftp://x/y\"",
        "webhook_url = \"http://hooks.example.com/x\"",
        "webhook_secret_file = \"s\"",
        "webhook_url = \"https://x/\"\nwebhook_timeout_seconds = 0",
        "webhook_url = \"https://x/\"\nwebhook_retries = 99",
        "bogus = 1",
    ] {
        assert!(with(bad).is_err(), "{bad}");
    }
}

#[test]
fn template_parses_as_written() {
    let c = parse(&template("https://idp.example.com", "jitssh")).unwrap();
    assert_eq!(c.user_ca_key, Path::new("/etc/jitssh/user_ca"));
    assert_eq!(c.limits.max_ttl.as_secs(), 3600);
    assert_eq!(c.host_max_ttl.as_secs(), 7 * 86400);
    assert_eq!(c.issuers.len(), 1);
    assert!(
        c.issuers[0].login.is_none(),
        "no login rule until one is set"
    );
}

#[test]
fn login_rules_per_issuer() {
    let t = template("https://idp.example.com", "jitssh");
    let set = with_login_rule(&t, None, &["Example.COM".into()]).unwrap();
    let c = parse(&set).unwrap();
    assert_eq!(
        c.issuers[0].login,
        ca_core::LoginRule::new(Some("email"), &["example.com".into()]).unwrap()
    );
    let pu = parse(&with_login_rule(&t, Some("preferred_username"), &[]).unwrap()).unwrap();
    assert_eq!(
        pu.issuers[0].login,
        ca_core::LoginRule::claim("preferred_username")
    );
    assert_eq!(with_login_rule(&t, None, &[]).unwrap(), t);
    for (claim, domains, why) in [
        (Some("email"), vec![], "needs email_domains"),
        (None, vec!["*.example.com".to_owned()], "not a domain name"),
        (
            Some("preferred_username"),
            vec!["example.com".into()],
            "only with login_claim",
        ),
    ] {
        let e = with_login_rule(&t, claim, &domains)
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{e}");
    }
    let with = |extra: &str| {
        parse(&format!(
            "{t}\n[[issuers]]\nissuer = \"https://ci.example.com\"\naudiences = [\"jitssh-ca\"]\n{extra}\n"
        ))
    };
    let e = with("kind = \"workload\"\nlogin_claim = \"preferred_username\"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("kind = \"human\" issuers"), "{e}");
    let e = with("login_claim = \"email\"").unwrap_err().to_string();
    assert!(
        e.contains("https://ci.example.com") && e.contains("email_domains"),
        "{e}"
    );
}

#[test]
fn refuses_plain_http_off_loopback() {
    let t = template("https://idp.example.com", "jitssh").replace("127.0.0.1:8443", "0.0.0.0:8443");
    assert!(parse(&t).is_err());
    let t = t.replace(
        "danger_allow_plain_http = false",
        "danger_allow_plain_http = true",
    );
    assert!(parse(&t).is_ok());
}

#[test]
fn refuses_unknown_fields_and_extensions() {
    let t = template("https://idp.example.com", "jitssh");
    assert!(parse(&t.replace("max_ttl = ", "max_tll = ")).is_err());
    assert!(parse(&t.replace("\"permit-pty\",", "\"permit-everything\",")).is_err());
}

#[test]
fn access_tokens_only_on_workload_issuers_with_an_audience() {
    let t = template("https://idp.example.com", "jitssh");
    let with = |extra: &str| {
        parse(&format!(
            "{t}\n[[issuers]]\nissuer = \"https://ci.example.com\"\naudiences = [\"jitssh-ca\"]\n{extra}\n"
        ))
    };
    let c = with("kind = \"workload\"\naccept_access_tokens = true\naccess_token_audience = \"urn:jitssh:ca\"").unwrap();
    assert_eq!(
        c.issuers[1].access_token_audience.as_deref(),
        Some("urn:jitssh:ca")
    );
    assert_eq!(c.issuers[0].access_token_audience, None);
    // The template's issuer is human: say why it cannot accept access tokens.
    let human = t.replace(
        "# accept_access_tokens = false\n# access_token_audience = \"urn:jitssh:ca\"",
        "accept_access_tokens = true\naccess_token_audience = \"urn:jitssh:ca\"",
    );
    let err = parse(&human).unwrap_err().to_string();
    assert!(
        err.contains("only allowed with kind = \"workload\""),
        "{err}"
    );
    for bad in [
        "kind = \"workload\"\naccept_access_tokens = true",
        "kind = \"workload\"\naccept_access_tokens = true\naccess_token_audience = \" \"",
        "kind = \"workload\"\naccess_token_audience = \"urn:jitssh:ca\"",
    ] {
        assert!(with(bad).is_err(), "{bad}");
    }
}

/// The template with `[database] url = URL` and `extra` lines.
fn with_postgres(url: &str, extra: &str) -> Result<Config, ConfigError> {
    let t = template("https://idp.example.com", "jitssh");
    parse(&t.replacen(
        "path = \"audit.db\"\n",
        &format!("url = \"{url}\"\n{extra}\n"),
        1,
    ))
}

const REMOTE: &str = "postgresql://jitssh@db.example:5432/jitssh";

#[test]
fn database_is_one_backend_and_keeps_passwords_out_of_the_url() {
    let err = |url: &str, extra: &str| with_postgres(url, extra).unwrap_err().to_string();
    // path and url together.
    let both = err(REMOTE, "path = \"audit.db\"");
    assert!(
        both.contains("both path") && both.contains("keep one"),
        "{both}"
    );
    // A password in the url, either form.
    for url in [
        "postgresql://jitssh:secret@db.example/jitssh",
        "host=db.example user=jitssh password=secret dbname=jitssh",
    ] {
        let msg = err(url, "");
        assert!(msg.contains("password_file"), "{url}: {msg}");
        assert!(
            !msg.contains("secret"),
            "the message must not echo it: {msg}"
        );
    }
    // A password file beside an SQLite path makes no sense.
    let t = template("https://idp.example.com", "jitssh");
    let msg = parse(&t.replacen(
        "path = \"audit.db\"\n",
        "path = \"audit.db\"\npassword_file = \"pw\"\n",
        1,
    ))
    .unwrap_err()
    .to_string();
    assert!(msg.contains("SQLite has no password"), "{msg}");
    // The password file is read at open, relative to the config, with a
    // clear error when missing.
    let c = with_postgres(
        REMOTE,
        "password_file = \"/nonexistent/pw\"\ntls = \"require\"",
    )
    .unwrap();
    let msg = c.database.open().unwrap_err().to_string();
    assert!(msg.contains("/nonexistent/pw"), "{msg}");
    // ... and refused, like a CA key, when others may read it.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "hunter2\n").unwrap();
    let open = |mode| {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        let extra = format!("password_file = {:?}\ntls = \"require\"", pw.display());
        with_postgres(REMOTE, &extra).unwrap().database.open()
    };
    let msg = open(0o640).unwrap_err().to_string();
    assert!(
        msg.contains("[database] password_file")
            && msg.contains(&format!("chmod 600 {}", pw.display())),
        "{msg}"
    );
    assert!(open(0o600).is_ok());
    // A user without a password in the url is fine.
    assert!(with_postgres(REMOTE, "tls = \"require\"").is_ok());
}

#[test]
fn database_tls_modes() {
    use crate::db::TlsMode;
    let mode = |url: &str, extra: &str| {
        let c = with_postgres(url, extra).unwrap();
        c.database.open().unwrap().target().tls_mode().unwrap()
    };
    assert_eq!(mode(REMOTE, "tls = \"require\""), TlsMode::Require);
    assert_eq!(mode(REMOTE, "tls = \"disable\""), TlsMode::Disable);
    // On loopback the default is plaintext, and TLS can be asked for.
    let local = "postgresql://jitssh@127.0.0.1:5432/jitssh";
    assert_eq!(mode(local, ""), TlsMode::Disable);
    assert_eq!(mode(local, "tls = \"require\""), TlsMode::Require);
    // Elsewhere verify-full, which wants a CA file: said at startup.
    let err = with_postgres(REMOTE, "")
        .unwrap()
        .database
        .open()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("[database] tls = \"verify-full\"")
            && err.contains("needs ca_file")
            && err.contains("db.example"),
        "{err}"
    );
    // Unknown values are refused with the allowed ones, and those that
    // would fall back to plaintext with why.
    for bad in ["verify-ca", "prefer", "on", "VERIFY-FULL"] {
        let err = with_postgres(REMOTE, &format!("tls = \"{bad}\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[database] tls")
                && err.contains(r#""verify-full", "require" or "disable""#),
            "{err}"
        );
    }
    let err = with_postgres(REMOTE, "tls = \"prefer\"").unwrap_err();
    assert!(err.to_string().contains("plaintext"), "{err}");
    // TLS keys are for PostgreSQL only.
    let t = template("https://idp.example.com", "jitssh");
    let err = parse(&t.replace(
        "path = \"audit.db\"\n",
        "path = \"audit.db\"\ntls = \"require\"\n",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("SQLite"), "{err}");
}

#[test]
fn database_ca_file_is_relative_to_the_config() {
    let c = with_postgres(REMOTE, "ca_file = \"db-ca.pem\"").unwrap();
    let Database::Postgres { url, .. } = &c.database else {
        panic!("{:?}", c.database)
    };
    // A CA file alone means verify-full.
    assert_eq!(url, &format!("{REMOTE}?sslrootcert=/etc/jitssh/db-ca.pem"));
    let err = c.database.open().unwrap_err().to_string();
    assert!(
        err.contains("[database] ca_file /etc/jitssh/db-ca.pem: cannot read it"),
        "{err}"
    );
    let c = with_postgres(
        REMOTE,
        "tls = \"verify-full\"\nca_file = \"/srv/pki/ca.pem\"",
    )
    .unwrap();
    let Database::Postgres { url, .. } = &c.database else {
        panic!("{:?}", c.database)
    };
    assert_eq!(
        url,
        &format!("{REMOTE}?sslmode=verify-full&sslrootcert=/srv/pki/ca.pem")
    );
    // A CA file is only for verify-full.
    let err = with_postgres(REMOTE, "tls = \"require\"\nca_file = \"ca.pem\"")
        .unwrap()
        .database
        .open()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only used with tls = \"verify-full\""),
        "{err}"
    );
}

#[test]
fn database_tls_is_set_once() {
    // libpq's sslmode in the url still works (the k8s example uses it)...
    let c = with_postgres(&format!("{REMOTE}?sslmode=disable"), "").unwrap();
    let db = c.database.open().unwrap();
    assert_eq!(db.target().tls_mode(), Some(crate::db::TlsMode::Disable));
    // ... but not as well as [database] tls.
    let err = with_postgres(&format!("{REMOTE}?sslmode=disable"), "tls = \"require\"")
        .unwrap()
        .database
        .open()
        .unwrap_err()
        .to_string();
    assert!(err.contains("keep one"), "{err}");
    let err = with_postgres(
        &format!("{REMOTE}?sslrootcert=/a.pem"),
        "ca_file = \"/b.pem\"",
    )
    .unwrap()
    .database
    .open()
    .unwrap_err()
    .to_string();
    assert!(err.contains("keep one"), "{err}");
}

#[test]
fn host_max_ttl_is_bounded_and_defaults_to_seven_days() {
    let t = template("https://idp.example.com", "jitssh");
    let c = parse(&t.replace("host_max_ttl = \"7d\"", "host_max_ttl = \"2d\"")).unwrap();
    assert_eq!(c.host_max_ttl.as_secs(), 2 * 86400);
    assert!(parse(&t.replace("host_max_ttl = \"7d\"", "host_max_ttl = \"8d\"")).is_err());
    let c = parse(&t.replace("host_max_ttl = \"7d\"", "")).unwrap();
    assert_eq!(c.host_max_ttl.as_secs(), 7 * 86400);
}

#[test]
fn requester_details_go_only_over_https_or_to_loopback() {
    for ok in [
        "https://hooks.example.com/x",
        "http://127.0.0.1:9000/hook",
        "http://127.8.9.10/hook",
        "http://localhost/hook",
        "http://[::1]:8080/hook",
    ] {
        assert_eq!(
            crate::config::check_webhook_url(&ok.parse().unwrap()),
            Ok(()),
            "{ok}"
        );
    }
    for bad in [
        "http://hooks.example.com/x",
        "http://10.0.0.1/hook",
        "http://[::ffff:10.0.0.1]/hook",
        "http://localhost.example.com/hook",
        "ftp://hooks.example.com/x",
    ] {
        let e = crate::config::check_webhook_url(&bad.parse().unwrap()).unwrap_err();
        assert!(e.contains("https"), "{bad}: {e}");
    }
}

#[test]
fn the_console_is_off_by_default_and_checked_when_on() {
    let t = template("https://idp.example.com", "jitssh");
    assert!(
        parse(&t).unwrap().ui.is_none(),
        "the template leaves it off"
    );
    let on =
        |lines: &str| parse(&t.replace("enabled = false\n", &format!("enabled = true\n{lines}")));
    let ui = on("public_url = \"https://ca.example.com\"\n")
        .unwrap()
        .ui
        .unwrap();
    assert_eq!(ui.public_url.as_str(), "https://ca.example.com/");
    assert!(ui.secure_cookies());
    assert_eq!(ui.client_id, "jitssh", "[login] client_id by default");
    assert_eq!(ui.issuer, "https://idp.example.com");
    assert!(
        !ui.scopes.iter().any(|s| s == "offline_access"),
        "{:?}",
        ui.scopes
    );
    assert_eq!(ui.idle_timeout.as_secs(), 1800);
    assert_eq!(ui.max_session.as_secs(), 8 * 3600);
    // Plain http on loopback: allowed, and its cookies are not Secure.
    let dev = on("public_url = \"http://127.0.0.1:8443\"\n")
        .unwrap()
        .ui
        .unwrap();
    assert!(!dev.secure_cookies());
    for (lines, why) in [
        ("", "public_url"),
        ("public_url = \"http://ca.example.com\"\n", "must be https"),
        (
            "public_url = \"https://ca.example.com/console\"\n",
            "scheme, host and port only",
        ),
        ("public_url = \"not a url\"\n", "not a URL"),
        (
            "public_url = \"https://ca.example.com\"\nclient_id = \"other\"\n",
            "not among the audiences",
        ),
    ] {
        let e = on(lines).unwrap_err().to_string();
        assert!(e.contains(why), "{lines:?}: {e}");
    }
    let long_idle = t
        .replace(
            "enabled = false\n",
            "enabled = true\npublic_url = \"https://ca.example.com\"\n",
        )
        .replace("idle_timeout = \"30m\"", "idle_timeout = \"9h\"");
    let e = parse(&long_idle).unwrap_err().to_string();
    assert!(e.contains("longer than max_session"), "{e}");
    // Sign-in needs the [login] provider.
    let no_login = t
        .replace(
            "enabled = false\n",
            "enabled = true\npublic_url = \"https://ca.example.com\"\n",
        )
        .replace(
            "[login]\nissuer = \"https://idp.example.com\"\nclient_id = \"jitssh\"\n",
            "",
        )
        .replace(
            "scopes = [\"openid\", \"email\", \"profile\", \"groups\", \"offline_access\"]\n",
            "",
        );
    let e = parse(&no_login).unwrap_err().to_string();
    assert!(e.contains("[login]"), "{e}");
}
