//! `tls-server` and `tls-client`: rustls with the ring provider. The server
//! has a fresh self-signed certificate (rcgen); the client accepts any.
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result, bail};
use rustls::{
    ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme, SupportedProtocolVersion,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::say;

/// What the client writes, and the server echoes.
const MESSAGE: &[u8] = b"hello over tls\n";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

static TLS12_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS12];

fn versions(tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    if tls12 { &TLS12_ONLY } else { rustls::DEFAULT_VERSIONS }
}

fn version_name(v: Option<rustls::ProtocolVersion>) -> &'static str {
    match v {
        Some(rustls::ProtocolVersion::TLSv1_2) => "1.2",
        Some(rustls::ProtocolVersion::TLSv1_3) => "1.3",
        _ => "-",
    }
}

fn alpn_name(p: Option<&[u8]>) -> String {
    p.map_or("-".into(), |p| String::from_utf8_lossy(p).into_owned())
}

pub async fn server(listener: TcpListener, alpn: &[String], tls12: bool) -> Result<()> {
    let key = rcgen::generate_simple_self_signed(vec!["localhost".into(), "tracer.test".into()])?;
    let cert = CertificateDer::from(key.cert.der().to_vec());
    let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.signing_key.serialize_der()));
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(tls12))?
        .with_no_client_auth()
        .with_single_cert(vec![cert], private)?;
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let served = async {
                let mut tls = acceptor.accept(tcp).await.context("handshake")?;
                // Echo until the client's close_notify (or EOF), then close ours.
                let mut buf = [0u8; 4096];
                loop {
                    let n = tls.read(&mut buf).await?;
                    if n == 0 {
                        break;
                    }
                    tls.write_all(&buf[..n]).await?;
                }
                tls.shutdown().await?;
                anyhow::Ok(())
            };
            if let Err(e) = tokio::time::timeout(Duration::from_secs(30), served)
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
            {
                crate::warn("tls connection", format!("{e:#}"));
            }
        });
    }
}

pub async fn client(addr: SocketAddr, sni: &str, alpn: &[String], tls12: bool) -> Result<()> {
    tokio::time::timeout(Duration::from_secs(10), exchange(addr, sni, alpn, tls12))
        .await
        .context("timed out")?
}

async fn exchange(addr: SocketAddr, sni: &str, alpn: &[String], tls12: bool) -> Result<()> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions(tls12))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = ServerName::try_from(sni.to_owned()).context("sni")?;
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    let _ = tcp.set_nodelay(true);
    let mut tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("handshake")?;
    {
        let (_, conn) = tls.get_ref();
        say(format_args!(
            "version {} alpn {}",
            version_name(conn.protocol_version()),
            alpn_name(conn.alpn_protocol())
        ));
    }
    tls.write_all(MESSAGE).await?;
    let mut echo = vec![0u8; MESSAGE.len()];
    tls.read_exact(&mut echo).await?;
    if echo != MESSAGE {
        bail!("the echo differs: {echo:?}");
    }
    say(format_args!("echo {} bytes", echo.len()));
    // close_notify, then wait for the server's.
    tls.shutdown().await?;
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest).await?;
    Ok(())
}

/// A test peer: any certificate is fine, signatures are still checked.
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
