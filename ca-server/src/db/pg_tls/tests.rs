//! Tests of `pg_tls`.

#![allow(clippy::unwrap_used)]

use super::*;

fn split(s: &str) -> (String, Option<String>, Option<String>) {
    let (rest, p) = take_tls_params(s).unwrap();
    (rest, p.mode, p.root_cert)
}

#[test]
fn tls_params_come_out_of_urls() {
    assert_eq!(
        split("postgresql://u@h:5432/db"),
        ("postgresql://u@h:5432/db".into(), None, None)
    );
    assert_eq!(
        split("postgresql://u@h/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem"),
        (
            "postgresql://u@h/db".into(),
            Some("verify-full".into()),
            Some("/etc/ca x.pem".into())
        )
    );
    assert_eq!(
        split("postgres://u@h/db?application_name=a&sslmode=require&connect_timeout=3"),
        (
            "postgres://u@h/db?application_name=a&connect_timeout=3".into(),
            Some("require".into()),
            None
        )
    );
    assert_eq!(
        split("postgres://u@h/db?sslmode=disable&options=-c%20x%3D1"),
        (
            "postgres://u@h/db?options=-c%20x%3D1".into(),
            Some("disable".into()),
            None
        )
    );
    let err = take_tls_params("postgres://h/db?sslmode=require&sslmode=disable").unwrap_err();
    assert!(err.message.contains("keep one"), "{err}");
}

#[test]
fn tls_params_come_out_of_key_value_strings() {
    assert_eq!(
        split("host=h user=u sslmode = verify-full sslrootcert='/etc/a b\\'c.pem' dbname=d"),
        (
            "host=h user=u   dbname=d".into(),
            Some("verify-full".into()),
            Some("/etc/a b'c.pem".into())
        )
    );
    // Unreadable: left whole for the postgres crate to report.
    assert_eq!(
        split("host=h sslmode"),
        ("host=h sslmode".into(), None, None)
    );
}

#[test]
fn tls_params_round_trip() {
    assert_eq!(
        with_tls_params("postgresql://u@h/db?", Some(TlsMode::Require), None),
        "postgresql://u@h/db?sslmode=require"
    );
    assert_eq!(
        split("postgresql://u@h/db?&sslmode=require&").0,
        "postgresql://u@h/db"
    );
    for url in [
        "postgresql://u@h/db",
        "postgresql://u@h/db?connect_timeout=3",
        "host=h dbname=d",
    ] {
        let with = with_tls_params(url, Some(TlsMode::VerifyFull), Some("/etc/j s/ca'\\.pem"));
        let (rest, mode, ca) = split(&with);
        assert_eq!(rest, url, "{with}");
        assert_eq!(mode.as_deref(), Some("verify-full"));
        assert_eq!(ca.as_deref(), Some("/etc/j s/ca'\\.pem"), "{with}");
    }
    assert_eq!(
        with_tls_params("postgresql://u@h/db", Some(TlsMode::Disable), None),
        "postgresql://u@h/db?sslmode=disable"
    );
}

#[test]
fn modes_parse_and_refuse_with_the_allowed_values() {
    assert_eq!("verify-full".parse(), Ok(TlsMode::VerifyFull));
    assert_eq!("require".parse(), Ok(TlsMode::Require));
    assert_eq!("disable".parse(), Ok(TlsMode::Disable));
    for bad in ["prefer", "allow", "verify-ca", "on", ""] {
        let err = bad.parse::<TlsMode>().unwrap_err();
        assert!(err.contains(TlsMode::ALLOWED), "{err}");
    }
}

fn target(url: &str) -> Result<super::super::Target, DbError> {
    super::super::Target::postgres(url, None)
}

#[test]
fn the_default_is_verify_full_off_loopback() {
    let mode = |url: &str| target(url).unwrap().tls_mode().unwrap();
    assert_eq!(mode("postgresql://u@127.0.0.1/db"), TlsMode::Disable);
    assert_eq!(mode("postgresql://u@localhost/db"), TlsMode::Disable);
    assert_eq!(mode("host=/run/postgresql dbname=db"), TlsMode::Disable);
    assert_eq!(
        mode("postgresql://u@db.example/db?sslmode=require"),
        TlsMode::Require
    );
    assert_eq!(
        mode("postgresql://u@127.0.0.1/db?sslmode=require"),
        TlsMode::Require
    );
    // Off loopback, verify-full; with no CA file that is a clear error.
    let err = target("postgresql://u@db.example/db").unwrap_err();
    assert!(
        err.message.contains("needs ca_file") && err.message.contains("db.example"),
        "{err}"
    );
    let err =
        target("postgresql://u@db.example/db?hostaddr=10.0.0.1&sslmode=verify-full").unwrap_err();
    assert!(err.message.contains("needs ca_file"), "{err}");
    // TLS cannot apply to a Unix socket.
    let err = target("host=/run/postgresql sslmode=require").unwrap_err();
    assert!(err.message.contains("Unix socket"), "{err}");
    // A CA file only with verify-full, absolute, readable, with certificates.
    let err = target("postgresql://u@h/db?sslmode=require&sslrootcert=/x.pem").unwrap_err();
    assert!(err.message.contains("only used with"), "{err}");
    let err = target("postgresql://u@h/db?sslrootcert=ca.pem").unwrap_err();
    assert!(err.message.contains("absolute"), "{err}");
    let err = target("postgresql://u@h/db?sslrootcert=/nonexistent/ca.pem").unwrap_err();
    assert!(
        err.message.contains("/nonexistent/ca.pem") && err.message.contains("cannot read"),
        "{err}"
    );
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let err = target(&format!(
        "postgresql://u@h/db?sslrootcert={}",
        empty.display()
    ))
    .unwrap_err();
    assert!(err.message.contains("holds no certificate"), "{err}");
    let err = target("postgresql://u@h/db?sslmode=prefer").unwrap_err();
    assert!(err.message.contains(TlsMode::ALLOWED), "{err}");
}

#[test]
fn der_walk_finds_the_signature_algorithm() {
    // SEQUENCE { SEQUENCE {} , SEQUENCE { OID sha384WithRSA, NULL }, BIT STRING }
    let cert = [
        0x30, 0x13, 0x30, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
        0x01, 0x0c, 0x05, 0x00, 0x03, 0x01, 0x00,
    ];
    assert_eq!(
        signature_algorithm(&cert),
        Some(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c][..])
    );
    assert_eq!(server_end_point(&cert).unwrap().len(), 48);
    assert_eq!(signature_algorithm(&cert[..10]), None);
    assert_eq!(signature_algorithm(&[]), None);
}
