//! TLS to PostgreSQL with libpq's meaning of `sslmode`, so a Coder `CODER_PG_CONNECTION_URL`
//! works unchanged:
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | no | — |
//! | `allow`, `prefer` (default) | if the server offers it | no (chain only with `sslrootcert`) |
//! | `require` | yes | no (chain only with `sslrootcert`, as libpq) |
//! | `verify-ca` | yes | chain, against the web PKI roots and `sslrootcert` |
//! | `verify-full` | yes | chain and host name |
//!
//! The driver knows only `disable`, `prefer` and `require`: the URL is rewritten to those, and
//! the checking is done here by the rustls configuration.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Not at all (libpq's `prefer` and `require` without `sslrootcert`).
    Nothing,
    /// Its chain, not its name (`verify-ca`, or `sslrootcert` with a weaker mode).
    Chain,
    /// Chain and host name (`verify-full`).
    Full,
}

/// A connection URL made ready for the driver.
pub struct Prepared {
    /// The driver's configuration.
    pub config: tokio_postgres::Config,
    /// The TLS connector, configured for the mode.
    pub tls: MakeRustlsConnect,
    /// What is checked (for a warning when it is nothing).
    pub check: Check,
    /// Whether TLS can be used at all.
    pub encrypted: bool,
}

/// Parses `url` (`CODER_PG_CONNECTION_URL`) with libpq's `sslmode` and `sslrootcert`.
pub fn prepare(url: &str) -> Result<Prepared, String> {
    let mut mode = "prefer".to_owned();
    let mut root_cert = None;
    let rewritten = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
        let mut kept = Vec::new();
        for (k, v) in parsed.query_pairs() {
            match k.as_ref() {
                "sslmode" => mode = v.into_owned(),
                "sslrootcert" => root_cert = Some(v.into_owned()),
                _ => kept.push((k.into_owned(), v.into_owned())),
            }
        }
        let driver_mode = match mode.as_str() {
            "disable" => "disable",
            "allow" | "prefer" => "prefer",
            "require" | "verify-ca" | "verify-full" => "require",
            other => {
                return Err(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        parsed
            .query_pairs_mut()
            .clear()
            .extend_pairs(kept)
            .append_pair("sslmode", driver_mode);
        parsed.to_string()
    } else {
        url.to_owned()
    };
    let config: tokio_postgres::Config = rewritten.parse().map_err(|e| format!("{e}"))?;
    if !url.starts_with("postgres") {
        mode = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => "disable",
            tokio_postgres::config::SslMode::Require => "require",
            _ => "prefer",
        }
        .to_owned();
    }
    let check = match (mode.as_str(), &root_cert) {
        ("verify-full", _) => Check::Full,
        ("verify-ca", _) | (_, Some(_)) => Check::Chain,
        _ => Check::Nothing,
    };
    let tls = MakeRustlsConnect::new(client_config(check, root_cert.as_deref())?);
    Ok(Prepared {
        config,
        tls,
        check,
        encrypted: mode != "disable",
    })
}

fn client_config(check: Check, root_cert: Option<&str>) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = root_cert {
        let certs =
            CertificateDer::pem_file_iter(path).map_err(|e| format!("sslrootcert={path}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("sslrootcert={path}: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("sslrootcert={path}: {e}"))?;
        }
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| e.to_string())?;
    let verifier: Arc<dyn ServerCertVerifier> = match check {
        Check::Full => webpki,
        Check::Chain => Arc::new(ChainOnly(webpki)),
        Check::Nothing => Arc::new(Unchecked(provider)),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// libpq's `require`: encrypted, whoever the server is. The handshake signature is still
/// checked against the certificate presented.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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

/// libpq's `verify-ca`: the chain must lead to a trusted root; the name is not compared
/// (webpki checks the chain before the name, so a name error means the chain was fine).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_map_to_what_the_driver_knows_and_what_is_checked() {
        let cases = [
            ("postgres://u@h/db", Check::Nothing, true),
            ("postgres://u@h/db?sslmode=disable", Check::Nothing, false),
            ("postgres://u@h/db?sslmode=require", Check::Nothing, true),
            ("postgres://u@h/db?sslmode=verify-ca", Check::Chain, true),
            ("postgres://u@h/db?sslmode=verify-full", Check::Full, true),
            ("host=h user=u sslmode=require", Check::Nothing, true),
        ];
        for (url, check, encrypted) in cases {
            let prepared = prepare(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (prepared.check, prepared.encrypted),
                (check, encrypted),
                "{url}"
            );
        }
        let full =
            prepare("postgresql://u@h:5433/db?sslmode=verify-full&application_name=x").unwrap();
        assert_eq!(
            full.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
        assert_eq!(full.config.get_application_name(), Some("x"));
        assert_eq!(full.config.get_ports(), [5433]);
    }

    #[test]
    fn bad_modes_and_missing_root_certificates_are_named() {
        let Err(e) = prepare("postgres://u@h/db?sslmode=verify") else {
            panic!("accepted sslmode=verify")
        };
        assert!(e.contains("sslmode=verify is not one of"), "{e}");
        let Err(e) = prepare("postgres://u@h/db?sslmode=verify-ca&sslrootcert=/nonexistent.pem")
        else {
            panic!("accepted a missing root certificate")
        };
        assert!(e.contains("sslrootcert=/nonexistent.pem"), "{e}");
    }
}
