//! TLS to a real PostgreSQL: a throwaway server with `ssl=on` serving a certificate signed by a
//! CA made here (rcgen). Each `sslmode` is checked by what the server itself reports of the
//! store's sessions (`pg_stat_ssl`), and a certificate that does not verify is a clear
//! configuration error naming the URL with its password hidden.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_store::testing::TempPostgres;
use improv_store::{PgStore, Store, StoreError};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::Path;

/// A CA and the server certificate it signed, for 127.0.0.1 only (no DNS name).
struct Pki {
    ca_pem: String,
    server_pem: String,
    server_key: String,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = ca("improv test CA");
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "improv test server");
    let server = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_pem: server.pem(),
        server_key: key.serialize_pem(),
    }
}

/// Whether the sessions the store opened under `application` are encrypted, as the server
/// sees them (`true`/`false` per session).
fn encrypted(pg: &TempPostgres, application: &str) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT string_agg(s.ssl::text, ',') FROM pg_stat_ssl s JOIN pg_stat_activity a \
             USING (pid) WHERE a.application_name = '{application}'"
        ),
    )
    .trim()
    .to_string()
}

fn url(pg: &TempPostgres, host: &str, query: &str) -> String {
    format!(
        "postgres://postgres:s3cret@{host}:{}/postgres?{query}",
        pg.tcp_port()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sslmode_encrypts_as_libpq_says_and_a_wrong_ca_is_refused_clearly() {
    let pki = pki();
    let pg = TempPostgres::start_new_tls(&pki.server_pem, &pki.server_key);
    let dir = tempfile::tempdir().unwrap();
    let right = write(dir.path(), "ca.pem", &pki.ca_pem);
    let wrong = write(dir.path(), "wrong.pem", &ca("another CA").pem());

    // (sslmode and root, host, whether the session must be encrypted)
    let cases = [
        ("sslmode=disable", "127.0.0.1", "false"),
        // The server offers TLS: prefer must take it, never go out in cleartext.
        ("sslmode=prefer", "127.0.0.1", "true"),
        ("", "127.0.0.1", "true"),
        ("sslmode=require", "127.0.0.1", "true"),
        (
            &format!("sslmode=verify-ca&sslrootcert={right}"),
            "127.0.0.1",
            "true",
        ),
        // verify-ca checks the chain, not the name: localhost is not in the certificate.
        (
            &format!("sslmode=verify-ca&sslrootcert={right}"),
            "localhost",
            "true",
        ),
        (
            &format!("sslmode=verify-full&sslrootcert={right}"),
            "127.0.0.1",
            "true",
        ),
    ];
    for (n, (query, host, expected)) in cases.iter().enumerate() {
        let application = format!("tls_case_{n}");
        let url = url(
            &pg,
            host,
            &format!("{query}&application_name={application}"),
        );
        let store = PgStore::connect(&url).unwrap();
        store
            .migrate()
            .await
            .unwrap_or_else(|e| panic!("{query} on {host}: {e}"));
        assert_eq!(
            encrypted(&pg, &application),
            *expected,
            "{query} on {host}: encrypted?"
        );
    }

    let refused = [
        // Signed by another CA.
        (
            format!("sslmode=verify-full&sslrootcert={wrong}"),
            "127.0.0.1",
        ),
        (
            format!("sslmode=verify-ca&sslrootcert={wrong}"),
            "127.0.0.1",
        ),
        // As in libpq, require checks the chain when given a root.
        (format!("sslmode=require&sslrootcert={wrong}"), "127.0.0.1"),
        // The right CA, but the certificate does not name localhost.
        (
            format!("sslmode=verify-full&sslrootcert={right}"),
            "localhost",
        ),
    ];
    for (query, host) in &refused {
        let store = PgStore::connect(&url(&pg, host, query)).unwrap();
        let error = store.migrate().await.expect_err(query);
        let text = error.to_string();
        assert!(
            matches!(error, StoreError::Config { .. }),
            "{query} on {host}: not a configuration error: {text}"
        );
        let redacted = format!("postgres://postgres:***@{host}:{}", pg.tcp_port());
        assert!(text.contains(&redacted), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("certificate"), "{text}");
        assert!(text.contains("sslrootcert"), "says what to check: {text}");
    }

    let error = PgStore::connect(&url(&pg, "127.0.0.1", "sslmode=verify-full"))
        .err()
        .expect("verify-full without a root");
    assert!(error.to_string().contains("needs sslrootcert="), "{error}");
}
