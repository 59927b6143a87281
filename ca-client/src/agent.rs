//! The running ssh-agent (`SSH_AUTH_SOCK`): add a key with its certificate
//! under a lifetime constraint, list certificates, remove them.
//!
//! ssh-agent-lib's blocking client over a Unix socket: every call is a short
//! local round trip, bounded by socket timeouts.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ssh_agent_lib::blocking::Client;
use ssh_agent_lib::proto::{
    AddIdentity, AddIdentityConstrained, KeyConstraint, PrivateCredential, PrivateKeyData,
    PublicCredential, RemoveIdentity,
};
use ssh_key::private::KeypairData;
use ssh_key::{Certificate, PrivateKey};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Talking to ssh-agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "no ssh-agent is running (SSH_AUTH_SOCK is not set): start one with `eval \"$(ssh-agent)\"`, or pass --write to use key files"
    )]
    NotRunning,
    #[error(
        "cannot connect to ssh-agent at {}: {source}. Start one with `eval \"$(ssh-agent)\"` (and check SSH_AUTH_SOCK), or pass --write to use key files",
        socket.display()
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("ssh-agent at {} refused to {action}: {detail}", socket.display())]
    Refused {
        socket: PathBuf,
        action: &'static str,
        detail: String,
    },
    #[error("only Ed25519 keys can be loaded by jitssh")]
    KeyType,
}

/// A connection to ssh-agent.
#[derive(Debug)]
pub struct Agent {
    socket: PathBuf,
    client: Client<UnixStream>,
}

impl Agent {
    /// The agent named by `SSH_AUTH_SOCK`.
    pub fn from_env() -> Result<Agent, AgentError> {
        match std::env::var_os("SSH_AUTH_SOCK") {
            Some(s) if !s.is_empty() => Agent::connect(Path::new(&s)),
            _ => Err(AgentError::NotRunning),
        }
    }

    pub fn connect(socket: &Path) -> Result<Agent, AgentError> {
        let err = |source| AgentError::Connect {
            socket: socket.to_owned(),
            source,
        };
        let stream = UnixStream::connect(socket).map_err(err)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(err)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(err)?;
        Ok(Agent {
            socket: socket.to_owned(),
            client: Client::new(stream),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn refused(&self, action: &'static str, e: impl std::fmt::Display) -> AgentError {
        AgentError::Refused {
            socket: self.socket.clone(),
            action,
            detail: e.to_string(),
        }
    }

    /// Add `key` with `cert`; the agent forgets both after `lifetime_secs`.
    pub fn add_certificate(
        &mut self,
        key: &PrivateKey,
        cert: &Certificate,
        lifetime_secs: u32,
        comment: &str,
    ) -> Result<(), AgentError> {
        let KeypairData::Ed25519(pair) = key.key_data() else {
            return Err(AgentError::KeyType);
        };
        let identity = AddIdentityConstrained {
            identity: AddIdentity {
                credential: PrivateCredential::Cert {
                    algorithm: key.algorithm(),
                    certificate: Box::new(cert.clone()),
                    privkey: PrivateKeyData::Ed25519(pair.clone()),
                    comment: comment.to_owned(),
                },
            },
            constraints: vec![KeyConstraint::Lifetime(lifetime_secs.max(1))],
        };
        self.client
            .add_identity_constrained(identity)
            .map_err(|e| self.refused("add the certificate", e))
    }

    /// The certificates the agent holds, with their comments.
    pub fn certificates(&mut self) -> Result<Vec<(Certificate, String)>, AgentError> {
        let identities = self
            .client
            .request_identities()
            .map_err(|e| self.refused("list its identities", e))?;
        Ok(identities
            .into_iter()
            .filter_map(|id| match id.credential {
                PublicCredential::Cert(cert) => Some((*cert, id.comment)),
                PublicCredential::Key(_) => None,
            })
            .collect())
    }

    /// Remove one certificate identity.
    pub fn remove_certificate(&mut self, cert: &Certificate) -> Result<(), AgentError> {
        self.client
            .remove_identity(RemoveIdentity {
                credential: PublicCredential::Cert(Box::new(cert.clone())),
            })
            .map_err(|e| self.refused("remove a certificate", e))
    }
}
