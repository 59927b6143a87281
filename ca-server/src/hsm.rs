//! CA keys inside a PKCS#11 token (an HSM, or SoftHSM2 in tests): Ed25519
//! keys found by token and key label, signing with `CKM_EDDSA`. The private
//! key never leaves the token; this process holds a logged-in session.
//!
//! A signing failure is reported as such (the caller answers 503); the next
//! signature first tries a fresh session, so the CA recovers by itself when
//! the token comes back. There is no fallback to any key file.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use ssh_key::public::{Ed25519PublicKey, KeyData};

/// `CKA_EC_PARAMS` for Ed25519: the curve name as a DER PrintableString
/// ("edwards25519"), which SoftHSM2 and most HSMs accept.
const ED25519_PARAMS: &[u8] = &[
    0x13, 0x0c, b'e', b'd', b'w', b'a', b'r', b'd', b's', b'2', b'5', b'5', b'1', b'9',
];

/// Where the keys are: `[ca.pkcs11]` in the config.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// A file holding the user PIN (one line, mode 0600), or ...
    pub pin_file: Option<PathBuf>,
    /// ... an environment variable holding it.
    pub pin_env: Option<String>,
    /// Labels of the user and host CA keys in the token.
    #[serde(default = "default_user_label")]
    pub user_key_label: String,
    #[serde(default = "default_host_label")]
    pub host_key_label: String,
}

fn default_user_label() -> String {
    "jitssh-user-ca".into()
}
fn default_host_label() -> String {
    "jitssh-host-ca".into()
}

#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    #[error("cannot load the PKCS#11 module {path}: {message}")]
    Module { path: PathBuf, message: String },
    #[error(
        "no PKCS#11 token labelled {0:?}; check [ca.pkcs11] token_label (softhsm2-util --show-slots lists them)"
    )]
    NoToken(String),
    #[error("the PKCS#11 PIN: {0}")]
    Pin(String),
    #[error("PKCS#11 login to token {token:?} failed: {message}")]
    Login { token: String, message: String },
    #[error(
        "no Ed25519 key labelled {0:?} in the token; create it with `jitssh-ca init --pkcs11 ...`"
    )]
    NoKey(String),
    #[error("a key labelled {0:?} already exists in the token; refusing to create another")]
    KeyExists(String),
    #[error("the public key labelled {label:?} is not a usable Ed25519 key: {message}")]
    BadPublic { label: String, message: String },
    #[error("PKCS#11 {0}")]
    Call(String),
}

fn call(what: &str) -> impl FnOnce(cryptoki::error::Error) -> HsmError + '_ {
    move |e| HsmError::Call(format!("{what}: {e}"))
}

impl Pkcs11Config {
    /// The PIN, from the file (0600, one line) or the environment.
    pub fn pin(&self) -> Result<AuthPin, HsmError> {
        match (&self.pin_file, &self.pin_env) {
            (Some(path), None) => {
                let pin = crate::secret_file::read_line(path, "[ca.pkcs11] pin_file")
                    .map_err(|e| HsmError::Pin(e.to_string()))?;
                Ok(AuthPin::new(pin.into()))
            }
            (None, Some(var)) => match std::env::var(var) {
                Ok(pin) if !pin.is_empty() => Ok(AuthPin::new(pin.into())),
                _ => Err(HsmError::Pin(format!(
                    "environment variable {var} is not set"
                ))),
            },
            _ => Err(HsmError::Pin(
                "set exactly one of [ca.pkcs11] pin_file and pin_env".into(),
            )),
        }
    }

    /// Resolve relative paths against the config file's directory.
    pub fn resolve(mut self, base: &Path) -> Self {
        if let Some(p) = &self.pin_file
            && p.is_relative()
        {
            self.pin_file = Some(base.join(p));
        }
        self
    }
}

/// The module, initialised once per process (a second C_Initialize fails).
fn open_module(module: &Path) -> Result<Pkcs11, HsmError> {
    let ctx = Pkcs11::new(module).map_err(|e| HsmError::Module {
        path: module.to_owned(),
        message: e.to_string(),
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => {
            return Err(HsmError::Module {
                path: module.to_owned(),
                message: e.to_string(),
            });
        }
    }
    Ok(ctx)
}

fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    for slot in ctx.get_slots_with_token().map_err(call("listing slots"))? {
        if let Ok(info) = ctx.get_token_info(slot)
            && info.label().trim_end() == label
        {
            return Ok(slot);
        }
    }
    Err(HsmError::NoToken(label.to_owned()))
}

fn login(ctx: &Pkcs11, config: &Pkcs11Config, rw: bool) -> Result<Session, HsmError> {
    let slot = find_slot(ctx, &config.token_label)?;
    let session = if rw {
        ctx.open_rw_session(slot)
    } else {
        ctx.open_ro_session(slot)
    }
    .map_err(call("opening a session"))?;
    let pin = config.pin()?;
    match session.login(UserType::User, Some(&pin)) {
        Ok(()) => Ok(session),
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(HsmError::Login {
            token: config.token_label.clone(),
            message: e.to_string(),
        }),
    }
}

fn find_key(
    session: &Session,
    class: ObjectClass,
    label: &str,
) -> Result<Option<ObjectHandle>, HsmError> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(call("finding keys"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => Err(HsmError::Call(format!(
            "{} keys are labelled {label:?}; labels must be unique",
            found.len()
        ))),
    }
}

/// The Ed25519 public key of `label` (from `CKA_EC_POINT`, raw or as a DER
/// OCTET STRING).
fn public_key(session: &Session, label: &str) -> Result<KeyData, HsmError> {
    let handle = find_key(session, ObjectClass::PUBLIC_KEY, label)?
        .ok_or_else(|| HsmError::NoKey(label.to_owned()))?;
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(call("reading the public key"))?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| HsmError::BadPublic {
            label: label.to_owned(),
            message: "no CKA_EC_POINT".into(),
        })?;
    let raw: &[u8] = match point.as_slice() {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest,
        p if p.len() == 32 => p,
        p => {
            return Err(HsmError::BadPublic {
                label: label.to_owned(),
                message: format!("CKA_EC_POINT of {} bytes", p.len()),
            });
        }
    };
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(raw);
    Ok(KeyData::Ed25519(Ed25519PublicKey(bytes)))
}

/// One CA key in the token, ready to sign.
pub struct Pkcs11Signer {
    ctx: Pkcs11,
    config: Pkcs11Config,
    label: String,
    public: KeyData,
    /// A logged-in session and the private key's handle in it; `None` after
    /// a failure, until the next signature opens a new one.
    session: Mutex<Option<(Session, ObjectHandle)>>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("token", &self.config.token_label)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Signer {
    /// Open the token, log in, find the key pair labelled `label`, and check
    /// it signs (a wrong PIN or a missing key refuses the start).
    pub fn open(config: &Pkcs11Config, label: &str) -> Result<Self, HsmError> {
        let ctx = open_module(&config.module)?;
        let session = login(&ctx, config, false)?;
        let public = public_key(&session, label)?;
        let private = find_key(&session, ObjectClass::PRIVATE_KEY, label)?
            .ok_or_else(|| HsmError::NoKey(label.to_owned()))?;
        let signer = Pkcs11Signer {
            ctx,
            config: config.clone(),
            label: label.to_owned(),
            public,
            session: Mutex::new(Some((session, private))),
        };
        signer.check()?;
        Ok(signer)
    }

    pub fn public_key(&self) -> &KeyData {
        &self.public
    }

    /// Sign a test message and verify it with the public key.
    pub fn check(&self) -> Result<(), HsmError> {
        let msg = b"jitssh-ca HSM check";
        let sig = self.sign_raw(msg)?;
        let key = self
            .public
            .ed25519()
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k.0).ok())
            .ok_or_else(|| HsmError::BadPublic {
                label: self.label.clone(),
                message: "not an Ed25519 point".into(),
            })?;
        let sig = ed25519_dalek::Signature::from_slice(&sig)
            .map_err(|e| HsmError::Call(format!("signature: {e}")))?;
        key.verify_strict(msg, &sig)
            .map_err(|_| HsmError::BadPublic {
                label: self.label.clone(),
                message: "the private key does not match the public key".into(),
            })
    }

    /// An Ed25519 signature (64 bytes) over `msg`, made in the token.
    pub fn sign_raw(&self, msg: &[u8]) -> Result<Vec<u8>, HsmError> {
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let mut guard = self.session.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((session, key)) = guard.as_ref() {
            match session.sign(&mechanism, *key, msg) {
                Ok(sig) if sig.len() == 64 => return Ok(sig),
                Ok(sig) => {
                    *guard = None;
                    return Err(HsmError::Call(format!("signature of {} bytes", sig.len())));
                }
                Err(e) => {
                    tracing::warn!(error = %e, label = %self.label, "HSM signature failed; reconnecting");
                    *guard = None;
                }
            }
        }
        // A fresh session (the token may have been re-inserted or restarted).
        let session = login(&self.ctx, &self.config, false)?;
        let key = find_key(&session, ObjectClass::PRIVATE_KEY, &self.label)?
            .ok_or_else(|| HsmError::NoKey(self.label.clone()))?;
        if public_key(&session, &self.label)? != self.public {
            return Err(HsmError::BadPublic {
                label: self.label.clone(),
                message: "the key in the token changed since start; restart jitssh-ca".into(),
            });
        }
        let sig = session
            .sign(&mechanism, key, msg)
            .map_err(call("signing"))?;
        if sig.len() != 64 {
            return Err(HsmError::Call(format!("signature of {} bytes", sig.len())));
        }
        *guard = Some((session, key));
        Ok(sig)
    }
}

/// Create an Ed25519 key pair labelled `label` inside the token: private
/// part sensitive and not extractable. Refuses an existing label.
pub fn generate(config: &Pkcs11Config, label: &str) -> Result<KeyData, HsmError> {
    TokenAdmin::open(config)?.generate(label)
}

/// The private or the public object of a key pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyHalf {
    Private,
    Public,
}

impl KeyHalf {
    fn class(self) -> ObjectClass {
        match self {
            KeyHalf::Private => ObjectClass::PRIVATE_KEY,
            KeyHalf::Public => ObjectClass::PUBLIC_KEY,
        }
    }
}

/// A logged-in session for managing the CA keys (`init`, `ca rotate`,
/// `ca status`, the published key list at start): find, create, rename and
/// destroy key pairs, and keep small records as data objects in the token.
pub struct TokenAdmin {
    // Dropped before the module context that owns it.
    session: Session,
    _ctx: Pkcs11,
}

impl TokenAdmin {
    /// A read-write session: may create, rename and destroy.
    pub fn open(config: &Pkcs11Config) -> Result<Self, HsmError> {
        Self::login(config, true)
    }

    /// A read-only session: finding keys and reading records only.
    pub fn open_read_only(config: &Pkcs11Config) -> Result<Self, HsmError> {
        Self::login(config, false)
    }

    fn login(config: &Pkcs11Config, rw: bool) -> Result<Self, HsmError> {
        let ctx = open_module(&config.module)?;
        let session = login(&ctx, config, rw)?;
        Ok(TokenAdmin { session, _ctx: ctx })
    }

    /// Whether the private and the public key labelled `label` exist.
    pub fn has(&self, label: &str) -> Result<(bool, bool), HsmError> {
        Ok((
            find_key(&self.session, ObjectClass::PRIVATE_KEY, label)?.is_some(),
            find_key(&self.session, ObjectClass::PUBLIC_KEY, label)?.is_some(),
        ))
    }

    /// The public key labelled `label`, if there is one.
    pub fn public_key(&self, label: &str) -> Result<Option<KeyData>, HsmError> {
        match public_key(&self.session, label) {
            Ok(k) => Ok(Some(k)),
            Err(HsmError::NoKey(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// See [`generate`].
    pub fn generate(&self, label: &str) -> Result<KeyData, HsmError> {
        if self.has(label)? != (false, false) {
            return Err(HsmError::KeyExists(label.to_owned()));
        }
        let id = label.as_bytes().to_vec();
        let public_template = vec![
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Verify(true),
            Attribute::EcParams(ED25519_PARAMS.to_vec()),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let private_template = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        self.session
            .generate_key_pair(
                &Mechanism::EccEdwardsKeyPairGen,
                &public_template,
                &private_template,
            )
            .map_err(call("generating the key pair"))?;
        public_key(&self.session, label)
    }

    /// Give the private and the public key labelled `from` the label `to`,
    /// each half on its own: a half already renamed (an earlier, interrupted
    /// call) is left alone, so the call can be repeated. Refused when a half
    /// exists under both labels.
    pub fn relabel(&self, from: &str, to: &str) -> Result<(), HsmError> {
        self.relabel_half(KeyHalf::Private, from, to)?;
        self.relabel_half(KeyHalf::Public, from, to)
    }

    /// One half of [`Self::relabel`].
    pub fn relabel_half(&self, half: KeyHalf, from: &str, to: &str) -> Result<(), HsmError> {
        let class = half.class();
        let Some(handle) = find_key(&self.session, class, from)? else {
            return Ok(());
        };
        if find_key(&self.session, class, to)?.is_some() {
            return Err(HsmError::KeyExists(to.to_owned()));
        }
        self.session
            .update_attributes(handle, &[Attribute::Label(to.as_bytes().to_vec())])
            .map_err(call("renaming a key"))
    }

    /// Destroy both halves of the key labelled `label` (those that exist).
    pub fn destroy(&self, label: &str) -> Result<(), HsmError> {
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            if let Some(handle) = find_key(&self.session, class, label)? {
                self.session
                    .destroy_object(handle)
                    .map_err(call("destroying a key"))?;
            }
        }
        Ok(())
    }

    fn data_objects(&self, label: &str) -> Result<Vec<ObjectHandle>, HsmError> {
        self.session
            .find_objects(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .map_err(call("finding data objects"))
    }

    /// The values of the data objects labelled `label`: normally none or
    /// one; two if [`Self::write_data`] was interrupted between writing the
    /// new one and destroying the old.
    pub fn read_data(&self, label: &str) -> Result<Vec<Vec<u8>>, HsmError> {
        let mut out = Vec::new();
        for handle in self.data_objects(label)? {
            let attrs = self
                .session
                .get_attributes(handle, &[AttributeType::Value])
                .map_err(call("reading a data object"))?;
            out.extend(attrs.into_iter().find_map(|a| match a {
                Attribute::Value(v) => Some(v),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Store `value` as the data object labelled `label` (public, on the
    /// token), replacing any earlier one.
    pub fn write_data(&self, label: &str, value: &[u8]) -> Result<(), HsmError> {
        let old = self.data_objects(label)?;
        self.session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Label(label.as_bytes().to_vec()),
                Attribute::Application(b"jitssh-ca".to_vec()),
                Attribute::Value(value.to_vec()),
            ])
            .map_err(call("writing a data object"))?;
        for handle in old {
            self.session
                .destroy_object(handle)
                .map_err(call("replacing a data object"))?;
        }
        Ok(())
    }
}
