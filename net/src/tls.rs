//! Mutual TLS for the TCP transport: credentials, the identities they
//! carry, and the rule binding a connection's claimed id to them.
//!
//! # Identities
//!
//! Every certificate a cluster's CA issues names exactly one identity in a
//! subject-alternative-name URI:
//!
//! ```text
//! ramcoord://replica/<id>    a coordinator replica (its Raft id)
//! ramcoord://master          a storage master (all masters share one)
//! ramcoord://client/admin    a client that may change the cluster
//! ramcoord://client/reader   a client that may only look
//! ```
//!
//! Server-side certificates also carry the DNS name [`SERVER_NAME`], which
//! is the name every connection verifies: peers are reached by address, and
//! who they are is read from the URI after the handshake, not from a host
//! name.
//!
//! # Binding ids to certificates
//!
//! The transport's ids ([`PeerId`]) are split in classes by their top bits
//! (replicas use small ids, masters bit 63, clients bit 62, and an admin
//! client bit 61 as well). After the handshake, the id a peer claims in its
//! `Hello` must be one its certificate admits ([`Identity::admits`]): a
//! replica certificate only its own id, a master certificate only master
//! ids, a client certificate only client ids of its role. So the class of
//! the sender of every message a node receives is proven by a credential,
//! and the node authorises by class ([`PeerClass::of`]) alone.
//!
//! # Files
//!
//! A credentials directory holds `ca.pem` (the cluster's CA certificate),
//! and one `NAME.pem` + `NAME.key` pair per identity: `replica-<id>`,
//! `master`, `admin`, `reader`. `ca.key` signs new credentials and should
//! stay off the nodes in a real deployment. Keys are written 0600, and a
//! key readable by group or others is refused.
//!
//! Only TLS 1.3 is offered, with the `ring` provider. Servers send no
//! session tickets: connections are long-lived, and resumption would only
//! add state.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::PeerId;

/// The DNS name on every server-side certificate, and the name every
/// client verifies.
pub const SERVER_NAME: &str = "ramcoord.cluster";

const URI_PREFIX: &str = "ramcoord://";

/// Bit 63 of a [`PeerId`]: a master.
pub const MASTER_BIT: PeerId = 1 << 63;
/// Bit 62 of a [`PeerId`]: a client.
pub const CLIENT_BIT: PeerId = 1 << 62;
/// Bit 61 of a client's [`PeerId`]: an admin client.
pub const ADMIN_BIT: PeerId = 1 << 61;

/// What a certificate says its holder is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// A coordinator replica with this Raft id.
    Replica(PeerId),
    /// A storage master.
    Master,
    /// A client that may change the cluster.
    Admin,
    /// A client that may only look.
    Reader,
}

impl Identity {
    /// The URI naming it in a certificate.
    pub fn uri(&self) -> String {
        match self {
            Identity::Replica(id) => format!("{URI_PREFIX}replica/{id}"),
            Identity::Master => format!("{URI_PREFIX}master"),
            Identity::Admin => format!("{URI_PREFIX}client/admin"),
            Identity::Reader => format!("{URI_PREFIX}client/reader"),
        }
    }

    /// Parses [`Identity::uri`]'s output.
    pub fn from_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(URI_PREFIX)?;
        match rest {
            "master" => Some(Identity::Master),
            "client/admin" => Some(Identity::Admin),
            "client/reader" => Some(Identity::Reader),
            _ => {
                let id: PeerId = rest.strip_prefix("replica/")?.parse().ok()?;
                (id != 0 && PeerClass::of(id) == PeerClass::Replica(id))
                    .then_some(Identity::Replica(id))
            }
        }
    }

    /// The base name of its files in a credentials directory.
    pub fn file_stem(&self) -> String {
        match self {
            Identity::Replica(id) => format!("replica-{id}"),
            Identity::Master => "master".into(),
            Identity::Admin => "admin".into(),
            Identity::Reader => "reader".into(),
        }
    }

    /// Whether a holder of this identity may use transport id `peer`.
    pub fn admits(&self, peer: PeerId) -> bool {
        match (self, PeerClass::of(peer)) {
            (Identity::Replica(id), PeerClass::Replica(p)) => *id == p,
            (Identity::Master, PeerClass::Master) => true,
            (Identity::Admin, PeerClass::Admin) => true,
            (Identity::Reader, PeerClass::Reader) => true,
            _ => false,
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Identity::Replica(id) => write!(f, "replica {id}"),
            Identity::Master => write!(f, "master"),
            Identity::Admin => write!(f, "admin"),
            Identity::Reader => write!(f, "reader"),
        }
    }
}

/// The class of a transport id (see the module docs). With TLS, the
/// transport has checked it against the sender's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerClass {
    /// A coordinator replica.
    Replica(PeerId),
    /// A storage master.
    Master,
    /// An admin client.
    Admin,
    /// A reader client.
    Reader,
}

impl PeerClass {
    /// The class of `peer`.
    pub fn of(peer: PeerId) -> PeerClass {
        if peer & MASTER_BIT != 0 {
            PeerClass::Master
        } else if peer & CLIENT_BIT != 0 {
            if peer & ADMIN_BIT != 0 {
                PeerClass::Admin
            } else {
                PeerClass::Reader
            }
        } else {
            PeerClass::Replica(peer)
        }
    }
}

/// Why credentials could not be made, loaded or checked.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A private key other users may read.
    #[error(
        "{path}: a private key must be readable by its owner only (mode {mode:o}); \
         run `chmod 600 {path}`"
    )]
    KeyExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file that does not hold what it should.
    #[error("{path}: {why}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The peer's certificate names no ramcoord identity.
    #[error("the peer's certificate names no ramcoord identity ({0})")]
    NoIdentity(String),
    /// Creating a credential failed.
    #[error("creating credentials: {0}")]
    Generate(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The files of one identity's credential.
#[derive(Clone, Debug)]
pub struct CredentialFiles {
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
    /// This identity's certificate (PEM).
    pub cert: PathBuf,
    /// This identity's private key (PEM, mode 0600).
    pub key: PathBuf,
}

impl CredentialFiles {
    /// The files of `identity` in credentials directory `dir`.
    pub fn in_dir(dir: &Path, identity: Identity) -> CredentialFiles {
        let stem = identity.file_stem();
        CredentialFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}.key")),
        }
    }
}

/// A loaded credential: what this process presents and whom it trusts.
#[derive(Clone)]
pub struct Tls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    identity: Identity,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("identity", &self.identity)
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads a credential. Its certificate must name an identity, and its
    /// key must be readable by its owner only.
    pub fn load(files: &CredentialFiles) -> Result<Tls, TlsError> {
        let ca = read_certs(&files.ca)?;
        let chain = read_certs(&files.cert)?;
        let key = read_key(&files.key)?;
        let identity = identity_of_der(&chain[0]).map_err(|e| TlsError::Bad {
            path: files.cert.clone(),
            why: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for c in ca {
            roots.add(c).map_err(|e| TlsError::Bad {
                path: files.ca.clone(),
                why: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Bad {
                path: files.ca.clone(),
                why: e.to_string(),
            })?;
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        server.send_tls13_tickets = 0;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?;
        Ok(Tls {
            server: Arc::new(server),
            client: Arc::new(client),
            identity,
        })
    }

    /// The identity this credential carries.
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// A server session for an accepted connection.
    pub fn accept(&self) -> Result<rustls::ServerConnection, TlsError> {
        Ok(rustls::ServerConnection::new(self.server.clone())?)
    }

    /// A client session for a connection we open.
    pub fn connect(&self) -> Result<rustls::ClientConnection, TlsError> {
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        Ok(rustls::ClientConnection::new(self.client.clone(), name)?)
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = fs::read(path).map_err(io_err(path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Bad {
            path: path.to_owned(),
            why: format!("not a PEM certificate: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Bad {
            path: path.to_owned(),
            why: "holds no certificate".into(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyExposed {
            path: path.to_owned(),
            mode,
        });
    }
    let pem = fs::read(path).map_err(io_err(path))?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Bad {
        path: path.to_owned(),
        why: format!("not a PEM private key: {e}"),
    })
}

/// The identity named by a certificate (DER).
pub fn identity_of_der(der: &[u8]) -> Result<Identity, TlsError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| TlsError::NoIdentity(format!("unreadable certificate: {e}")))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| TlsError::NoIdentity(e.to_string()))?
        .ok_or_else(|| TlsError::NoIdentity("no subject alternative name".into()))?;
    let mut found = None;
    for name in &san.value.general_names {
        if let x509_parser::extensions::GeneralName::URI(uri) = name {
            if let Some(id) = Identity::from_uri(uri) {
                if found.replace(id).is_some() {
                    return Err(TlsError::NoIdentity("more than one identity".into()));
                }
            }
        }
    }
    found.ok_or_else(|| TlsError::NoIdentity("no ramcoord:// URI".into()))
}

/// The identity of the peer of an established session.
pub fn peer_identity(conn: &rustls::CommonState) -> Result<Identity, TlsError> {
    let certs = conn
        .peer_certificates()
        .ok_or_else(|| TlsError::NoIdentity("no certificate presented".into()))?;
    let first = certs
        .first()
        .ok_or_else(|| TlsError::NoIdentity("no certificate presented".into()))?;
    identity_of_der(first)
}

/// What [`issue`] did.
#[derive(Debug, Default)]
pub struct Issued {
    /// Whether a new CA was created (else the directory's was used).
    pub new_ca: bool,
    /// The credentials written, by identity.
    pub written: Vec<Identity>,
    /// The credentials already present and kept.
    pub kept: Vec<Identity>,
}

/// Issues credentials into `dir`: the CA (kept if `ca.pem` and `ca.key`
/// are there, else created), then each of `identities` missing from it
/// (all of them if `reissue`), valid from an hour ago for `days` days.
pub fn issue(
    dir: &Path,
    identities: &[Identity],
    days: u32,
    reissue: bool,
) -> Result<Issued, TlsError> {
    let not_before = time::OffsetDateTime::now_utc() - time::Duration::hours(1);
    let not_after = not_before + time::Duration::days(i64::from(days)) + time::Duration::hours(1);
    issue_valid(dir, identities, not_before, not_after, reissue)
}

/// [`issue`] with the validity of the new credentials given (a new CA is
/// valid for ten years from `not_before`).
pub fn issue_valid(
    dir: &Path,
    identities: &[Identity],
    not_before: time::OffsetDateTime,
    not_after: time::OffsetDateTime,
    reissue: bool,
) -> Result<Issued, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType,
    };
    let gen = |e: rcgen::Error| TlsError::Generate(e.to_string());
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let ca_cert_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca.key");
    let mut out = Issued::default();
    let (ca_cert, ca_key) = if ca_cert_path.exists() && ca_key_path.exists() {
        let key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
        let _ = read_key(&ca_key_path)?; // refuses an exposed key
        let key = KeyPair::from_pem(&key_pem).map_err(gen)?;
        let cert_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
        let params = CertificateParams::from_ca_cert_pem(&cert_pem).map_err(gen)?;
        // Re-signing the same name with the same key gives an issuer that
        // verifies exactly like the original.
        let cert = params.self_signed(&key).map_err(gen)?;
        (cert, key)
    } else {
        let key = KeyPair::generate().map_err(gen)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "ramcoord cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before =
            not_before.min(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
        params.not_after = params.not_before + time::Duration::days(3650);
        let cert = params.self_signed(&key).map_err(gen)?;
        write_file(&ca_cert_path, cert.pem().as_bytes(), 0o644)?;
        write_file(&ca_key_path, key.serialize_pem().as_bytes(), 0o600)?;
        out.new_ca = true;
        (cert, key)
    };
    for &identity in identities {
        let files = CredentialFiles::in_dir(dir, identity);
        if !reissue && !out.new_ca && files.cert.exists() && files.key.exists() {
            out.kept.push(identity);
            continue;
        }
        let key = KeyPair::generate().map_err(gen)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen)?;
        params
            .distinguished_name
            .push(DnType::CommonName, identity.uri());
        let uri = rcgen::Ia5String::try_from(identity.uri()).map_err(gen)?;
        let dns = rcgen::Ia5String::try_from(SERVER_NAME).map_err(gen)?;
        params.subject_alt_names = vec![SanType::URI(uri), SanType::DnsName(dns)];
        // Replicas and masters also serve; a client credential can only
        // be presented as a client (it cannot pose as a server).
        params.extended_key_usages = match identity {
            Identity::Replica(_) | Identity::Master => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
            Identity::Admin | Identity::Reader => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(gen)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
        write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
        out.written.push(identity);
    }
    Ok(out)
}

/// Writes `bytes` to `path` with `mode`, replacing it (a key is never
/// readable by others, not even for a moment).
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_bind_their_ids() {
        for id in [
            Identity::Replica(1),
            Identity::Replica(77),
            Identity::Master,
            Identity::Admin,
            Identity::Reader,
        ] {
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        assert_eq!(Identity::from_uri("ramcoord://replica/0"), None);
        assert_eq!(Identity::from_uri("ramcoord://replica/x"), None);
        assert_eq!(
            Identity::from_uri(&format!("ramcoord://replica/{}", 1u64 << 62)),
            None
        );
        assert!(Identity::Replica(3).admits(3));
        assert!(!Identity::Replica(3).admits(2));
        assert!(!Identity::Replica(3).admits(MASTER_BIT | 3));
        assert!(Identity::Master.admits(MASTER_BIT | 99));
        assert!(!Identity::Master.admits(CLIENT_BIT | ADMIN_BIT | 5));
        assert!(Identity::Admin.admits(CLIENT_BIT | ADMIN_BIT | 5));
        assert!(!Identity::Reader.admits(CLIENT_BIT | ADMIN_BIT | 5));
        assert!(Identity::Reader.admits(CLIENT_BIT | 5));
        assert!(!Identity::Admin.admits(CLIENT_BIT | 5));
    }

    #[test]
    fn issued_credentials_load_and_name_their_identity() {
        let dir = std::env::temp_dir().join(format!("ramcoord-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let ids = [Identity::Replica(1), Identity::Master, Identity::Reader];
        let first = issue(&dir, &ids, 30, false).unwrap();
        assert!(first.new_ca);
        assert_eq!(first.written, ids);
        for id in ids {
            let tls = Tls::load(&CredentialFiles::in_dir(&dir, id)).unwrap();
            assert_eq!(tls.identity(), id);
        }
        // A second run keeps what is there and adds what is missing.
        let again = issue(&dir, &[Identity::Master, Identity::Admin], 30, false).unwrap();
        assert!(!again.new_ca);
        assert_eq!(again.kept, [Identity::Master]);
        assert_eq!(again.written, [Identity::Admin]);
        Tls::load(&CredentialFiles::in_dir(&dir, Identity::Admin)).unwrap();
        // An exposed key is refused.
        let key = CredentialFiles::in_dir(&dir, Identity::Admin).key;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Tls::load(&CredentialFiles::in_dir(&dir, Identity::Admin)).unwrap_err();
        assert!(matches!(err, TlsError::KeyExposed { .. }), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }
}
