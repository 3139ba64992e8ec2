//! TLS to PostgreSQL, as libpq's `sslmode` describes it, on rustls (through
//! tokio-postgres-rustls): `disable` never encrypts; `prefer` encrypts whenever the server offers
//! TLS (and fails rather than falling back to cleartext when the handshake fails); `require`
//! encrypts or does not connect; `verify-ca` also checks that the certificate chains to the CA in
//! `sslrootcert`; `verify-full` also checks that it names the host. As in libpq, `prefer` and
//! `require` check the chain when `sslrootcert` is given, and only then.
//!
//! What that leaves open, and improv says at open ([`warn_if_unprotected`]): `prefer` takes
//! the server's "no TLS" answer, which anyone on the path can forge, and goes on in
//! cleartext; `prefer` and `require` without `sslrootcert` accept any certificate. Neither
//! protects against a man in the middle, so for a host reached over the network (not a Unix
//! socket, not loopback) a warning names the store and says to use `sslmode=verify-full`.
//! The default stays `prefer`, as in libpq.
//!
//! The two verifiers that check less than rustls's own (no name, or nothing) are written here:
//! rustls offers the pieces (`verify_server_cert_signed_by_trust_anchor`, the provider's
//! signature checks) but no such verifier, since the web never wants one.

use crate::url::{PgParams, SslMode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{WebPkiServerVerifier, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::Arc;
use tokio_postgres::config::Host;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connector for `params`, and the mode tokio-postgres negotiates with (it knows no
/// `verify-*`: those are `require` plus a verifier). An unreadable or empty `sslrootcert` is an
/// error naming the file.
pub(crate) fn connector(
    params: &PgParams,
) -> Result<(MakeRustlsConnect, tokio_postgres::config::SslMode), String> {
    use tokio_postgres::config::SslMode as Wire;
    let provider = Arc::new(ring::default_provider());
    let roots = params.root_cert.as_deref().map(read_roots).transpose()?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Arc<dyn ServerCertVerifier> = match (params.ssl, roots) {
        (SslMode::VerifyFull, Some(roots)) => {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("sslrootcert: {e}"))?
        }
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(format!(
                "sslmode={} needs sslrootcert=PATH, the CA certificate (PEM) that signed the \
                 server's",
                params.ssl.as_str()
            ));
        }
        (_, Some(roots)) => Arc::new(ChainOnly { roots, algorithms }),
        (_, None) => Arc::new(Unverified { algorithms }),
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let wire = match params.ssl {
        SslMode::Disable => Wire::Disable,
        SslMode::Prefer => Wire::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => Wire::Require,
    };
    Ok((MakeRustlsConnect::new(config), wire))
}

/// Logs a warning when `store` is reached over the network with a mode that a man in the
/// middle can read or change ([`unprotected`]).
pub(crate) fn warn_if_unprotected(params: &PgParams, hosts: &[Host], store: &str) {
    if unprotected(params, hosts) {
        tracing::warn!(
            "the store {store} is reached over the network with sslmode={} and no sslrootcert: \
             not protected against a man in the middle (prefer falls back to cleartext when \
             told to, and any certificate is accepted); use sslmode=verify-full with \
             sslrootcert=PATH",
            params.ssl.as_str()
        );
    }
}

/// Whether `prefer` or `require` without a root certificate reaches a host other than a Unix
/// socket or a loopback address. No host means libpq's default, the local socket.
fn unprotected(params: &PgParams, hosts: &[Host]) -> bool {
    let weak = matches!(params.ssl, SslMode::Prefer | SslMode::Require);
    weak && params.root_cert.is_none() && hosts.iter().any(|h| !local(h))
}

fn local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            let name = name.trim_start_matches('[').trim_end_matches(']');
            name.eq_ignore_ascii_case("localhost")
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
    }
}

/// The CA certificates of a PEM file.
fn read_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("sslrootcert {shown} cannot be read: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("sslrootcert {shown} is not PEM certificates: {e}"))?;
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!(
            "sslrootcert {shown} holds no usable CA certificate"
        ));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must end at one of `roots`; the name is not checked.
#[derive(Debug)]
struct ChainOnly {
    roots: RootCertStore,
    algorithms: WebPkiSupportedAlgorithms,
}

/// `prefer`/`require` without `sslrootcert`: encrypted, the certificate not checked (libpq's
/// meaning; the handshake's signatures are still checked).
#[derive(Debug)]
struct Unverified {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for Unverified {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::url::split_pg_params;

    fn warned(url: &str) -> bool {
        let (url, params) = split_pg_params(url).unwrap();
        let config: tokio_postgres::Config = url.parse().unwrap();
        unprotected(&params, config.get_hosts())
    }

    #[test]
    fn a_network_host_without_a_checked_certificate_is_warned_of() {
        assert!(warned("postgres://u@db.example.org/improv"));
        assert!(warned("postgres://u@10.0.0.5/improv?sslmode=require"));
        assert!(warned("postgres://u@localhost,db.example.org/improv"));
        // Checked, local, or plainly asked for without TLS: nothing to warn of.
        assert!(!warned(
            "postgres://u@db.example.org/improv?sslmode=verify-full&sslrootcert=/ca.pem"
        ));
        assert!(!warned(
            "postgres://u@db.example.org/improv?sslmode=require&sslrootcert=/ca.pem"
        ));
        assert!(!warned("postgres://u@localhost/improv"));
        assert!(!warned("postgres://u@127.0.0.1:5433/improv"));
        assert!(!warned("postgres://u@[::1]/improv"));
        assert!(!warned("postgres://u@%2Ftmp%2Fpg/improv"));
        assert!(!warned(
            "postgres://u@db.example.org/improv?sslmode=disable"
        ));
    }
}
