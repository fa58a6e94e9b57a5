//! A real TLS client (rustls) speaking HTTP/2 or HTTP/1.1, as the API
//! server does when it calls a webhook.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use upgrade_guard::webhook::tls;

/// One TLS connection speaking HTTP/2 or HTTP/1.1, as negotiated by ALPN.
pub enum Client {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

pub type Reply = (StatusCode, Option<String>, Bytes);

pub fn client_tls(
    roots: &[&str],
    alpn: &str,
    identity: Option<(&str, &str)>,
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut config = match identity {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
                .map(Result::unwrap)
                .collect();
            builder
                .with_client_auth_cert(
                    chain,
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    Arc::new(config)
}

impl Client {
    pub async fn connect(
        addr: SocketAddr,
        roots: &[&str],
        alpn: &'static str,
        identity: Option<(&str, &str)>,
    ) -> Result<Client, String> {
        let (client, _) = Self::connect_seeing(addr, roots, alpn, identity).await?;
        Ok(client)
    }

    /// Also returns the certificate the server presented.
    pub async fn connect_seeing(
        addr: SocketAddr,
        roots: &[&str],
        alpn: &'static str,
        identity: Option<(&str, &str)>,
    ) -> Result<(Client, Vec<u8>), String> {
        Self::connect_to(addr, "localhost", roots, alpn, identity).await
    }

    /// Connects asking for (and verifying) the server name `name`.
    pub async fn connect_to(
        addr: SocketAddr,
        name: &str,
        roots: &[&str],
        alpn: &'static str,
        identity: Option<(&str, &str)>,
    ) -> Result<(Client, Vec<u8>), String> {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        // As the API server's Go client does: no Nagle delay on small writes.
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        let connector = TlsConnector::from(client_tls(roots, alpn, identity));
        let name = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let presented = stream.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let io = TokioIo::new(stream);
        let client = if alpn == "h2" {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Client::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            Client::H1(send)
        };
        Ok((client, presented))
    }

    /// Whether the connection can carry no further request (waits for an
    /// HTTP/1.1 connection to finish the exchange in progress first).
    pub async fn is_closed(&mut self) -> bool {
        match self {
            Client::H1(send) => send.ready().await.is_err(),
            Client::H2(send) => send.ready().await.is_err(),
        }
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Reply, String> {
        self.send(
            method,
            path,
            content_type,
            None,
            Full::new(Bytes::from(body)).boxed(),
        )
        .await
    }

    /// A GET with an `Accept` header.
    pub async fn get_accepting(&mut self, path: &str, accept: &str) -> Reply {
        let body = Full::new(Bytes::new()).boxed();
        self.send("GET", path, "text/plain", Some(accept), body)
            .await
            .unwrap()
    }

    /// A POST whose body is sent in chunks with no length given up front
    /// (chunked over HTTP/1.1), so the server learns its size as it reads.
    pub async fn post_streamed(&mut self, path: &str, chunks: Vec<Bytes>) -> Result<Reply, String> {
        let frames = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(c))),
        );
        self.send(
            "POST",
            path,
            "application/json",
            None,
            StreamBody::new(frames).boxed(),
        )
        .await
    }

    /// A POST declaring `length` bytes and sending what arrives on `chunks`.
    pub async fn post_channel(
        &mut self,
        path: &str,
        length: usize,
        chunks: tokio::sync::mpsc::Receiver<Bytes>,
    ) -> Result<Reply, String> {
        let frames = futures::stream::unfold(chunks, |mut rx| async move {
            rx.recv().await.map(|c| {
                (
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(c)),
                    rx,
                )
            })
        });
        let request = Request::builder()
            .method("POST")
            .uri(format!("https://localhost{path}"))
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("content-length", length)
            .body(StreamBody::new(frames).boxed())
            .map_err(|e| e.to_string())?;
        self.exchange(request).await
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        content_type: &str,
        accept: Option<&str>,
        body: Body,
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("https://localhost{path}"))
            .header("host", "localhost")
            .header("content-type", content_type);
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let request = request.body(body).unwrap();
        self.exchange(request).await
    }

    async fn exchange(&mut self, mut request: Request<Body>) -> Result<Reply, String> {
        let response = match self {
            Client::H1(send) => {
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(request).await
            }
            Client::H2(send) => {
                // :authority carries it (RFC 9113 §8.3.1); nginx refuses both.
                request.headers_mut().remove("host");
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(request).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, content_type, body))
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> Reply {
        self.request("POST", path, "application/json", body)
            .await
            .unwrap()
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.request("GET", path, "text/plain", Vec::new())
            .await
            .unwrap()
    }
}
