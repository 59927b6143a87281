//! TLS to PostgreSQL over rustls with the ring provider (the one TLS stack
//! of the server): the `[database] tls` modes, the connector the sync
//! `postgres` client drives, and what to say when a handshake fails.
//!
//! - `verify-full`: the server's certificate must chain to a CA in
//!   `ca_file` and name the url's host (DNS name or IP address), like
//!   libpq's `sslmode=verify-full`.
//! - `require`: encrypted, any certificate accepted (the handshake signature
//!   is still checked against the certificate's key, but nothing says whose
//!   key that is). Stops an eavesdropper, not an active attacker between the
//!   CA and the database, like libpq's `sslmode=require`. One mitigation:
//!   SCRAM-SHA-256 logins use channel binding whenever the server offers it,
//!   so a server refuses a login relayed through someone else's TLS session
//!   (trust, md5 and password logins have no such protection).
//! - `disable`: plaintext.
//!
//! There is no `prefer`: when TLS is on and the server does not speak it,
//! the connection fails; it never goes on in clear.
//!
//! The settings travel in the connection string with libpq's names,
//! `sslmode` and `sslrootcert` (`[database] tls` and `ca_file` are added
//! there by the config), and are taken out before the `postgres` crate
//! parses the rest: it knows neither `verify-full` nor `sslrootcert`.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::postgres::Socket;
use ::postgres::config::{Host, SslMode};
use ::postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::conn::{DbError, DbErrorKind};

/// `[database] tls`: how connections to PostgreSQL are protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsMode {
    /// Plaintext: the default only when every host is a loopback address,
    /// `localhost` or a Unix socket.
    Disable,
    /// Encrypted; the server's certificate is not checked.
    Require,
    /// Encrypted; the certificate must chain to `ca_file` and name the host.
    /// The default for any other host.
    VerifyFull,
}

impl TlsMode {
    /// The accepted values, for messages.
    pub const ALLOWED: &'static str = r#""verify-full", "require" or "disable""#;

    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for TlsMode {
    /// Why the value is refused, listing the accepted ones.
    type Err = String;

    fn from_str(s: &str) -> Result<TlsMode, String> {
        match s {
            "verify-full" => Ok(TlsMode::VerifyFull),
            "require" => Ok(TlsMode::Require),
            "disable" => Ok(TlsMode::Disable),
            "prefer" | "allow" => Err(format!(
                "{s:?} is not supported (it goes on in plaintext when the server does not offer TLS); use {}",
                TlsMode::ALLOWED
            )),
            "verify-ca" => Err(format!(
                "\"verify-ca\" is not supported (it does not check the host name); use {}",
                TlsMode::ALLOWED
            )),
            _ => Err(format!("{s:?} is not a TLS mode; use {}", TlsMode::ALLOWED)),
        }
    }
}

/// `sslmode` and `sslrootcert` as written in a connection string.
#[derive(Debug, Default)]
pub(super) struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

const MODE: &str = "sslmode";
const ROOT_CERT: &str = "sslrootcert";

/// Takes `sslmode` and `sslrootcert` out of a connection string (URL or
/// key=value); the rest is for the `postgres` crate. A string this cannot
/// read is returned whole, for the crate to say what is wrong with it.
pub(super) fn take_tls_params(s: &str) -> Result<(String, TlsParams), DbError> {
    let mut tls = TlsParams::default();
    if is_url(s) {
        let Some((base, query)) = s.split_once('?') else {
            return Ok((s.to_owned(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (Some(key), Some(value)) = (percent_decode(key), percent_decode(value)) else {
                return Ok((s.to_owned(), TlsParams::default()));
            };
            if !tls.set(&key, value)? {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, tls));
    }
    let Some(params) = key_value_params(s) else {
        return Ok((s.to_owned(), tls));
    };
    let mut rest = String::with_capacity(s.len());
    let mut kept_from = 0;
    for (key, value, span) in params {
        if tls.set(&key, value)? {
            rest.push_str(&s[kept_from..span.start]);
            kept_from = span.end;
        }
    }
    rest.push_str(&s[kept_from..]);
    Ok((rest.trim().to_owned(), tls))
}

impl TlsParams {
    /// Keeps `value` if `key` is a TLS parameter (true), refusing a second
    /// one.
    fn set(&mut self, key: &str, value: String) -> Result<bool, DbError> {
        let (slot, what, config_key) = match key {
            MODE => (&mut self.mode, "TLS mode", "tls"),
            ROOT_CERT => (&mut self.root_cert, "CA file", "ca_file"),
            _ => return Ok(false),
        };
        if slot.replace(value).is_some() {
            return Err(DbError::new(
                DbErrorKind::Other,
                format!(
                    "[database] {what} is given twice (the url's {key} and [database] {config_key} \
                     are the same setting): keep one"
                ),
            ));
        }
        Ok(true)
    }
}

/// `url` with `[database] tls` and `ca_file` added as `sslmode` and
/// `sslrootcert`, in the string's own syntax (URL or key=value).
pub fn with_tls_params(url: &str, mode: Option<TlsMode>, ca_file: Option<&str>) -> String {
    let params = mode
        .map(|m| (MODE, m.as_str()))
        .into_iter()
        .chain(ca_file.map(|f| (ROOT_CERT, f)));
    let mut out = url.trim_end().to_owned();
    for (key, value) in params {
        if is_url(url) {
            if !out.contains('?') {
                out.push('?');
            } else if !out.ends_with(['?', '&']) {
                out.push('&');
            }
            out.push_str(key);
            out.push('=');
            out.push_str(&percent_encode(value));
        } else {
            let quoted = value.replace('\\', "\\\\").replace('\'', "\\'");
            out.push_str(&format!(" {key}='{quoted}'"));
        }
    }
    out
}

fn is_url(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// A key=value string's parameters, unquoted, with their spans; read the
/// way the `postgres` crate reads them.
fn key_value_params(s: &str) -> Option<Vec<(String, String, Range<usize>)>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    let skip_ws = |it: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_ws(&mut it);
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_ws(&mut it);
        it.next_if(|(_, c)| *c == '=')?;
        skip_ws(&mut it);
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next()? {
                    (_, '\\') => value.push(it.next()?.1),
                    (_, '\'') => break,
                    (_, c) => value.push(c),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(it.next()?.1);
                } else {
                    value.push(c);
                }
            }
            if value.is_empty() {
                return None;
            }
        }
        if key.is_empty() {
            return None;
        }
        let end = it.peek().map_or(s.len(), |&(i, _)| i);
        out.push((key, value, start..end));
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).and_then(|&c| hex(c)),
            b.get(i + 2).and_then(|&c| hex(c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).ok()?);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The TLS a target's connections use: the mode, and the connector unless
/// it is `disable`.
#[derive(Clone)]
pub struct PgTls {
    mode: TlsMode,
    connector: Option<MakeRustls>,
}

impl fmt::Debug for PgTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgTls({})", self.mode)
    }
}

impl PgTls {
    /// The mode the parameters ask for (or the host's default), with the CA
    /// file read now, so that a missing or bad one fails at startup.
    pub(super) fn new(config: &::postgres::Config, params: TlsParams) -> Result<PgTls, DbError> {
        let invalid = |m: String| DbError::new(DbErrorKind::Other, m);
        let explicit = params
            .mode
            .as_deref()
            .map(|m| {
                m.parse::<TlsMode>()
                    .map_err(|why| invalid(format!("[database] tls (sslmode) = {m:?}: {why}")))
            })
            .transpose()?;
        let ca_file = params.root_cert.map(PathBuf::from);
        let mode = match (explicit, &ca_file) {
            (Some(mode), _) => mode,
            // A CA file says what to verify against.
            (None, Some(_)) => TlsMode::VerifyFull,
            (None, None) if local_only(config) => TlsMode::Disable,
            (None, None) => TlsMode::VerifyFull,
        };
        if let Some(ca) = &ca_file {
            if mode != TlsMode::VerifyFull {
                return Err(invalid(format!(
                    "[database] ca_file (sslrootcert) is only used with tls = \"verify-full\"; \
                     remove it, or set tls = \"verify-full\" instead of {mode:?}",
                    mode = mode.as_str()
                )));
            }
            if !ca.is_absolute() {
                return Err(invalid(format!(
                    "[database] ca_file (sslrootcert) {}: give an absolute path \
                     ([database] ca_file is relative to the config file)",
                    ca.display()
                )));
            }
        }
        if mode == TlsMode::Disable {
            return Ok(PgTls {
                mode,
                connector: None,
            });
        }
        if config
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Unix(_)))
        {
            return Err(invalid(format!(
                "[database] tls = \"{mode}\", but the url names a Unix socket, where PostgreSQL has no TLS: \
                 connect over TCP, or set tls = \"disable\" (a local socket needs no encryption)"
            )));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS for PostgreSQL: {e}")))?;
        let mut tls = match &ca_file {
            Some(ca) => builder
                .with_root_certificates(roots(ca)?)
                .with_no_client_auth(),
            None if mode == TlsMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth(),
            None => {
                let default = if explicit.is_none() {
                    format!(
                        " (the default for {}, which is not a loopback address)",
                        host_names(config)
                    )
                } else {
                    String::new()
                };
                return Err(invalid(format!(
                    "[database] tls = \"verify-full\"{default} needs ca_file: the PEM file of the CA \
                     that signed the PostgreSQL server's certificate. Or set tls = \"require\" \
                     (encrypted, certificate not checked) or \"disable\""
                )));
            }
        };
        // What PostgreSQL 17 expects of a client that offers ALPN; older
        // servers ignore it.
        tls.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(PgTls {
            mode,
            connector: Some(MakeRustls(Arc::new(tls))),
        })
    }

    pub(super) fn mode(&self) -> TlsMode {
        self.mode
    }

    /// What the `postgres` crate is told: TLS or fail, or no TLS at all.
    pub(super) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            TlsMode::Disable => SslMode::Disable,
            TlsMode::Require | TlsMode::VerifyFull => SslMode::Require,
        }
    }

    /// `None` with `disable`.
    pub(super) fn connector(&self) -> Option<&MakeRustls> {
        self.connector.as_ref()
    }
}

/// Every host a loopback address, `localhost` or a Unix socket (and every
/// `hostaddr` a loopback address): traffic that never leaves the machine,
/// as plain HTTP is allowed on loopback. A local TLS-terminating proxy
/// (cloud SQL proxy, stunnel) is the usual reason to connect there.
fn local_only(config: &::postgres::Config) -> bool {
    let hosts = config.get_hosts().iter().all(|h| match h {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
    });
    hosts && config.get_hostaddrs().iter().all(IpAddr::is_loopback)
}

fn host_names(config: &::postgres::Config) -> String {
    let names: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            Host::Tcp(name) => name.clone(),
            Host::Unix(path) => path.display().to_string(),
        })
        .chain(config.get_hostaddrs().iter().map(IpAddr::to_string))
        .collect();
    names.join(", ")
}

/// The CA certificates of a PEM file.
fn roots(path: &Path) -> Result<RootCertStore, DbError> {
    let bad = |why: String| {
        DbError::new(
            DbErrorKind::Other,
            format!("[database] ca_file {}: {why}", path.display()),
        )
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
        let cert = cert.map_err(|e| bad(format!("not a PEM file: {e}")))?;
        roots.add(cert).map_err(|e| {
            bad(format!(
                "certificate {} is not a usable CA certificate: {e}",
                i + 1
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(bad(
            "holds no certificate (-----BEGIN CERTIFICATE-----): it must be the PEM file of the CA \
             that signed the PostgreSQL server's certificate"
                .into(),
        ));
    }
    Ok(roots)
}

/// `require`: any certificate, but the handshake must be signed with its
/// key (so the session is at least bound to the certificate shown, which
/// channel binding relies on).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Makes a TLS connector per host for the `postgres` client.
#[derive(Clone)]
pub(super) struct MakeRustls(Arc<ClientConfig>);

impl MakeTlsConnect<Socket> for MakeRustls {
    type Stream = RustlsStream;
    type TlsConnect = RustlsConnect;
    type Error = TlsError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, TlsError> {
        // Unix sockets (refused with TLS earlier) and `hostaddr` without a
        // `host` come with no name.
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TlsError {
            host: host.to_owned(),
            cause: Cause::NoName,
        })?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
            host: host.to_owned(),
        })
    }
}

pub(super) struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    host: String,
}

impl TlsConnect<Socket> for RustlsConnect {
    type Stream = RustlsStream;
    type Error = TlsError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream, TlsError>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            tokio_rustls::TlsConnector::from(self.config)
                .connect(self.name, stream)
                .await
                .map(RustlsStream)
                .map_err(|e| TlsError {
                    host: self.host,
                    cause: Cause::Handshake(e),
                })
        })
    }
}

pub(super) struct RustlsStream(tokio_rustls::client::TlsStream<Socket>);

impl AsyncRead for RustlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RustlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl TlsStream for RustlsStream {
    /// `tls-server-end-point`, for SCRAM-SHA-256-PLUS.
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

/// RFC 5929 `tls-server-end-point`: the server's certificate hashed with
/// the hash of its signature algorithm (SHA-256 in place of MD5 and SHA-1),
/// as PostgreSQL computes it. `None` for signatures without one such hash
/// (Ed25519, RSASSA-PSS, SHA-224): SCRAM then runs without channel binding.
fn server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    use ring::digest;
    const RSA: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: [u8; 6] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    let oid = signature_algorithm(cert)?;
    let algorithm = if let Some(n) = oid.strip_prefix(&RSA[..]) {
        match n {
            // md5WithRSAEncryption, sha1WithRSAEncryption, sha256WithRSAEncryption
            [0x04] | [0x05] | [0x0b] => &digest::SHA256,
            [0x0c] => &digest::SHA384,
            [0x0d] => &digest::SHA512,
            _ => return None,
        }
    } else if let Some(n) = oid.strip_prefix(&ECDSA[..]) {
        match n {
            // ecdsa-with-SHA1, ecdsa-with-SHA256
            [0x01] | [0x03, 0x02] => &digest::SHA256,
            [0x03, 0x03] => &digest::SHA384,
            [0x03, 0x04] => &digest::SHA512,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(digest::digest(algorithm, cert).as_ref().to_vec())
}

/// The OID of a certificate's `signatureAlgorithm` (after the
/// `tbsCertificate`).
fn signature_algorithm(cert: &[u8]) -> Option<&[u8]> {
    let (cert, _) = der(cert, 0x30)?;
    let (_tbs, rest) = der(cert, 0x30)?;
    let (algorithm, _) = der(rest, 0x30)?;
    let (oid, _) = der(algorithm, 0x06)?;
    Some(oid)
}

/// The contents of the DER element with `tag` at the start of `input`, and
/// what follows it.
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    if t != tag {
        return None;
    }
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, &b| (len << 8) | usize::from(b));
        (len, rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// A TLS failure, with the host it was for.
#[derive(Debug)]
pub(super) struct TlsError {
    host: String,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    /// No host name to check the certificate against.
    NoName,
    Handshake(io::Error),
}

impl TlsError {
    fn rustls(&self) -> Option<&rustls::Error> {
        match &self.cause {
            Cause::Handshake(e) => e.get_ref()?.downcast_ref(),
            Cause::NoName => None,
        }
    }

    /// What to do about it.
    fn hint(&self) -> String {
        use CertificateError as C;
        let host = &self.host;
        match (&self.cause, self.rustls()) {
            (Cause::NoName, _) => "TLS needs a host name to check the server's certificate \
                 against: name the host in [database] url (hostaddr alone gives none)"
                .into(),
            (
                _,
                Some(rustls::Error::InvalidCertificate(
                    C::NotValidForName | C::NotValidForNameContext { .. },
                )),
            ) => format!(
                "the server's certificate does not name {host}: use a name it has in [database] url, \
                 or have the certificate issued for {host}"
            ),
            (
                _,
                Some(rustls::Error::InvalidCertificate(
                    C::Expired
                    | C::ExpiredContext { .. }
                    | C::NotValidYet
                    | C::NotValidYetContext { .. },
                )),
            ) => "the server's certificate has expired or is not valid yet: renew it \
                  (or check this machine's clock)"
                .into(),
            (_, Some(rustls::Error::InvalidCertificate(_))) => format!(
                "check [database] ca_file: it must hold the CA that signed the server's certificate, \
                 and the certificate must name {host}"
            ),
            _ => format!(
                "the TLS handshake with {host} failed: check the server's ssl settings, \
                 and [database] tls and ca_file"
            ),
        }
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.cause, self.rustls()) {
            (Cause::NoName, _) => write!(f, "no host name for TLS (got {:?})", self.host),
            (_, Some(e)) => write!(f, "{e}"),
            (Cause::Handshake(e), None) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TlsError {}

/// What to do about a TLS failure, if `e` is one.
pub(super) fn hint(e: &::postgres::Error) -> Option<String> {
    let cause = std::error::Error::source(e)?;
    if let Some(tls) = cause.downcast_ref::<TlsError>() {
        return Some(tls.hint());
    }
    // The `postgres` crate's words when the server answers the TLS request
    // with "no".
    (cause.to_string() == "server does not support TLS").then(|| {
        "the server does not accept TLS: turn ssl on in its postgresql.conf, or set \
         [database] tls = \"disable\" (everything, password included, then travels in clear)"
            .into()
    })
}

#[cfg(test)]
mod tests;
