//! TLS on every link (rustls, with the ring provider).
//!
//! Each cluster has its own certificate authority (CA). A node's certificate is signed by it and
//! names the node as the DNS name `n{ID}.raftchat`. The name is what is checked, in both
//! directions; the address a node was dialled on is not:
//! - A client (or a peer dialling out) dials node ID and accepts only a certificate that chains
//!   to the CA and names `n{ID}.raftchat`.
//! - A node accepts an inbound peer only if that peer presented a certificate of the CA naming
//!   the id its `PeerHello` claims. A node can therefore speak only as itself, and a stranger,
//!   or a node of another cluster (another CA), not at all. Clients present no certificate:
//!   users prove who they are in the protocol, not in TLS.
//! - A removed member still holds a valid certificate. Raft's own rules hold it off (its
//!   messages are ignored, except a leader's).
//!
//! Certificates are read when a process starts. Rotate them by restarting one node at a time
//! with new files; a new CA needs every node restarted with a bundle of both CAs first.
//!
//! [`Authority`] makes a CA and node certificates (rcgen), for `raftchat cluster up` and
//! `cluster add`.

use raftchat::types::NodeId;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The DNS name a node's certificate carries: `n{ID}.raftchat`.
pub fn node_name(id: NodeId) -> ServerName<'static> {
    ServerName::try_from(format!("n{}.raftchat", id.0)).expect("always a valid DNS name")
}

/// A TLS file or setting that cannot be used, as one line naming the file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Largest certificate or key file read: a CA bundle is a few kilobytes.
const PEM_FILE_BYTES_MAX: u64 = 1024 * 1024;

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    let fail = |e: String| TlsError(format!("{}: cannot read: {e}", path.display()));
    let metadata = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !metadata.is_file() {
        return Err(fail("not a file".into()));
    }
    if metadata.len() > PEM_FILE_BYTES_MAX {
        return Err(fail(format!("larger than {PEM_FILE_BYTES_MAX} bytes")));
    }
    std::fs::read(path).map_err(|e| fail(e.to_string()))
}

fn certificates(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{origin}: not a PEM certificate file: {e}")))?;
    if certificates.is_empty() {
        return Err(TlsError(format!("{origin}: holds no certificate")));
    }
    Ok(certificates)
}

fn roots(ca_pem: &[u8], origin: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(ca_pem, origin)? {
        roots
            .add(certificate)
            .map_err(|e| TlsError(format!("{origin}: not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A node's TLS: it accepts clients and peers, and dials peers, with its certificate.
#[derive(Clone)]
pub struct NodeTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl std::fmt::Debug for NodeTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeTls")
    }
}

impl NodeTls {
    /// Reads the CA certificate(s), this node's certificate chain and its private key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<NodeTls, TlsError> {
        let ca_pem = read(ca)?;
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let origins = [ca, cert, key].map(|p| p.display().to_string());
        NodeTls::from_pem(&ca_pem, &cert_pem, &key_pem, &origins)
    }

    /// The same from PEM text; `origins` names the three sources in errors.
    pub fn from_pem(
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
        origins: &[String; 3],
    ) -> Result<NodeTls, TlsError> {
        let roots = roots(ca_pem, &origins[0])?;
        let chain = certificates(cert_pem, &origins[1])?;
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| TlsError(format!("{}: not a PEM private key: {e}", origins[2])))?;
        let mismatch =
            |e: rustls::Error| TlsError(format!("{} and {}: {e}", origins[1], origins[2]));
        // Peers must show a certificate of the CA; clients show none.
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError(format!("{}: {e}", origins[0])))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(mismatch)?;
        Ok(NodeTls {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Accepts the TLS session of an inbound connection.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<Stream> {
        let stream = self.acceptor.accept(stream).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }

    /// Opens a TLS session to peer `peer` over `stream`, showing this node's certificate.
    pub async fn connect(&self, peer: NodeId, stream: TcpStream) -> io::Result<Stream> {
        let stream = self.connector.connect(node_name(peer), stream).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }
}

/// A client's TLS: it checks that the node it dials shows a certificate of the cluster's CA
/// naming that node.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Reads the CA certificate(s).
    pub fn load(ca: &Path) -> Result<ClientTls, TlsError> {
        ClientTls::from_pem(&read(ca)?, &ca.display().to_string())
    }

    /// The same from PEM text; `origin` names it in errors.
    pub fn from_pem(ca_pem: &[u8], origin: &str) -> Result<ClientTls, TlsError> {
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots(ca_pem, origin)?)
            .with_no_client_auth();
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// Opens a TLS session to node `node` over `stream`.
    pub async fn connect(&self, node: NodeId, stream: TcpStream) -> io::Result<Stream> {
        let stream = self.connector.connect(node_name(node), stream).await?;
        Ok(Stream::Tls(Box::new(stream.into())))
    }
}

/// A connection, in clear or in TLS.
#[derive(Debug)]
pub enum Stream {
    /// Plaintext (a cluster without `[tls]`).
    Plain(TcpStream),
    /// A TLS session, either end.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

impl Stream {
    /// The certificate the other end showed, already checked against the CA; none in clear
    /// or from a client.
    pub fn peer_certificate(&self) -> Option<CertificateDer<'static>> {
        let Stream::Tls(stream) = self else {
            return None;
        };
        let (_, session) = stream.get_ref();
        session.peer_certificates()?.first().cloned()
    }
}

/// Whether `certificate` names node `id` (`n{ID}.raftchat`).
pub fn names_node(certificate: &CertificateDer<'_>, id: NodeId) -> bool {
    rustls::server::ParsedCertificate::try_from(certificate)
        .and_then(|cert| rustls::client::verify_server_name(&cert, &node_name(id)))
        .is_ok()
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A cluster's certificate authority, to sign node certificates with.
pub struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    cert_pem: String,
    key_pem: String,
}

/// A certificate and its private key, in PEM.
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
}

fn rcgen_error(e: rcgen::Error) -> TlsError {
    TlsError(format!("cannot make a certificate: {e}"))
}

/// Seconds since the epoch by this process's clock (simulated time in the simulator).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A new key pair. Ed25519: fast, and its keys and signatures have one size, so every
/// handshake of a cluster is the same number of bytes (the simulator's runs then depend on no
/// random draw of ring's, which madsim cannot seed).
fn key_pair() -> Result<rcgen::KeyPair, TlsError> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(rcgen_error)
}

/// A serial number unique to this CA's certificates: the time it was made, and the node (0
/// for the CA). Fixed-size for the same reason as the keys.
fn serial(id: u64) -> rcgen::SerialNumber {
    rcgen::SerialNumber::from((now_secs() << 16) | (id & 0xffff))
}

/// Validity of the certificates made here: from the start of this year for ten years.
fn validity(params: &mut rcgen::CertificateParams) {
    let secs = now_secs();
    // Days since 1970 / 365.2425, close enough to find this year for a validity window.
    let year = 1970 + (secs / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
}

impl Authority {
    /// A new CA for cluster `cluster_id`.
    pub fn new(cluster_id: u64) -> Result<Authority, TlsError> {
        let key = key_pair()?;
        let mut params = Authority::params(cluster_id)?;
        params.serial_number = Some(serial(0));
        let cert = params.self_signed(&key).map_err(rcgen_error)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Ok(Authority {
            issuer: rcgen::Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// What a CA made by [`Authority::new`] for `cluster_id` says of itself: the name a node
    /// certificate's issuer must match.
    fn params(cluster_id: u64) -> Result<rcgen::CertificateParams, TlsError> {
        let mut params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("raftchat cluster {cluster_id} CA"),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        validity(&mut params);
        Ok(params)
    }

    /// The CA [`Authority::new`] made for `cluster_id`, whose certificate and key are in these
    /// PEM files (what `raftchat cluster up` wrote).
    pub fn load(cluster_id: u64, cert: &Path, key: &Path) -> Result<Authority, TlsError> {
        let text = |path: &Path| {
            String::from_utf8(read(path)?)
                .map_err(|_| TlsError(format!("{}: not a PEM file", path.display())))
        };
        let (cert_pem, key_pem) = (text(cert)?, text(key)?);
        let key_pair = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| TlsError(format!("{}: not a PEM private key: {e}", key.display())))?;
        Ok(Authority {
            issuer: rcgen::Issuer::new(Authority::params(cluster_id)?, key_pair),
            cert_pem,
            key_pem,
        })
    }

    /// The CA's certificate, in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, in PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Node `id`'s TLS with a new certificate from this CA, held in memory (tests, and
    /// clusters that make their certificates on the spot).
    pub fn node_tls(&self, id: NodeId) -> Result<NodeTls, TlsError> {
        let issued = self.issue(id)?;
        let origins = [
            format!("the CA of {id}"),
            format!("{id}'s certificate"),
            format!("{id}'s key"),
        ];
        NodeTls::from_pem(
            self.cert_pem.as_bytes(),
            issued.cert_pem.as_bytes(),
            issued.key_pem.as_bytes(),
            &origins,
        )
    }

    /// A certificate naming node `id` (`n{ID}.raftchat`), for serving and for dialling peers.
    pub fn issue(&self, id: NodeId) -> Result<Issued, TlsError> {
        let key = key_pair()?;
        let name = format!("n{}.raftchat", id.0);
        let mut params = rcgen::CertificateParams::new(vec![name.clone()]).map_err(rcgen_error)?;
        params.serial_number = Some(serial(id.0));
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        validity(&mut params);
        let cert = params.signed_by(&key, &self.issuer).map_err(rcgen_error)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_tls(authority: &Authority, id: u64) -> NodeTls {
        authority.node_tls(NodeId(id)).unwrap()
    }

    /// Dials node 1 (served with `server`) as `dial` does, and returns whether the session
    /// opened and whether the server saw a certificate naming `claim`.
    async fn handshake(
        server: NodeTls,
        dial: impl FnOnce(
            TcpStream,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Stream>>>>,
        claim: NodeId,
    ) -> (bool, bool) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepting = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            match server.accept(stream).await {
                Ok(mut stream) => {
                    use tokio::io::AsyncReadExt;
                    let mut byte = [0u8; 1];
                    let read = stream.read_exact(&mut byte).await.is_ok();
                    (
                        read,
                        stream
                            .peer_certificate()
                            .is_some_and(|c| names_node(&c, claim)),
                    )
                }
                Err(_) => (false, false),
            }
        });
        let stream = TcpStream::connect(address).await.unwrap();
        if let Ok(mut stream) = dial(stream).await {
            use tokio::io::AsyncWriteExt;
            let _ = stream.write_all(b"x").await;
            let _ = stream.flush().await;
        }
        accepting.await.unwrap()
    }

    #[tokio::test]
    async fn peers_prove_their_id_and_clients_check_the_node() {
        let authority = Authority::new(7).unwrap();
        let server = node_tls(&authority, 1);
        let peer = node_tls(&authority, 2);
        // A peer of the cluster proves it is node 2, and only node 2.
        let dial = |peer: NodeTls| {
            move |s| -> std::pin::Pin<Box<dyn std::future::Future<Output = _>>> {
                Box::pin(async move { peer.connect(NodeId(1), s).await })
            }
        };
        assert_eq!(
            handshake(server.clone(), dial(peer.clone()), NodeId(2)).await,
            (true, true)
        );
        assert_eq!(
            handshake(server.clone(), dial(peer), NodeId(3)).await,
            (true, false)
        );
        // A client shows no certificate: the session opens, and proves no node.
        let ca = authority.cert_pem().as_bytes();
        let client = ClientTls::from_pem(ca, "ca").unwrap();
        let dial_client = move |s| -> std::pin::Pin<Box<dyn std::future::Future<Output = _>>> {
            Box::pin(async move { client.connect(NodeId(1), s).await })
        };
        assert_eq!(
            handshake(server.clone(), dial_client, NodeId(2)).await,
            (true, false)
        );
        // A node of another cluster is refused.
        let stranger = node_tls(&Authority::new(8).unwrap(), 2);
        assert_eq!(
            handshake(server.clone(), dial(stranger), NodeId(2)).await,
            (false, false)
        );
        // A client that expects node 3 refuses node 1's certificate.
        let client = ClientTls::from_pem(ca, "ca").unwrap();
        let wrong = move |s| -> std::pin::Pin<Box<dyn std::future::Future<Output = _>>> {
            Box::pin(async move { client.connect(NodeId(3), s).await })
        };
        assert_eq!(handshake(server, wrong, NodeId(2)).await, (false, false));
    }

    #[test]
    fn bad_files_get_one_line_naming_them() {
        let origins = ["ca.pem", "node.pem", "node.key"].map(String::from);
        let error = NodeTls::from_pem(b"nonsense", b"", b"", &origins).unwrap_err();
        assert!(error.to_string().starts_with("ca.pem: "), "{error}");
        let authority = Authority::new(1).unwrap();
        let issued = authority.issue(NodeId(1)).unwrap();
        let other = authority.issue(NodeId(2)).unwrap();
        let ca = authority.cert_pem().as_bytes();
        let error = NodeTls::from_pem(
            ca,
            issued.cert_pem.as_bytes(),
            other.key_pem.as_bytes(),
            &origins,
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("node.pem and node.key: "),
            "{error}"
        );
        assert!(ClientTls::from_pem(b"", "ca.pem").is_err());
    }
}
