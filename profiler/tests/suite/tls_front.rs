//! A TLS front for the test Pyroscope: terminates HTTPS with a certificate
//! made by the test and forwards each connection to the server's plain HTTP
//! port, as the proxy in front of a real deployment does. (Pyroscope's own
//! `-server.http-tls-*` flags break its single-binary mode: its components
//! call each other over plain HTTP on that same port.)

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

/// Listening on 127.0.0.1 until dropped.
pub struct TlsFront {
    port: u16,
    /// Dropping it ends the serving thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor, target: SocketAddr) {
    while let Ok((client, _)) = listener.accept().await {
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // A refused handshake (the client distrusts the certificate)
            // just ends the connection.
            let Ok(mut tls) = acceptor.accept(client).await else {
                return;
            };
            let Ok(mut server) = TcpStream::connect(target).await else {
                return;
            };
            let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
        });
    }
}

impl TlsFront {
    /// Serves `cert` and `key` (PEM) and forwards to 127.0.0.1:`upstream`.
    pub fn start(cert: &Path, key: &Path, upstream: u16) -> Self {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = SocketAddr::from(([127, 0, 0, 1], upstream));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = stopped => {}
                    _ = serve(listener, acceptor, target) => {}
                }
            });
        });
        Self { port, _stop: stop }
    }

    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
}
