//! TLS for an `https` judge whose endpoint sits under a private certificate
//! authority: the judge's `ca_file` (PEM, one or more certificates) becomes
//! the only roots its connections trust, in place of the Mozilla roots
//! ureq bundles. rustls does the work (ring as its crypto provider); this
//! file only reads the certificates and reports what is wrong with them,
//! naming the file.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A client configuration trusting exactly the certificates in `ca_file`.
///
/// # Errors
/// The file cannot be read, is not PEM, holds no certificate, or holds a
/// certificate rustls cannot use as a root; each message names the file.
pub fn trusting(ca_file: &Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let shown = ca_file.display();
    let bytes =
        std::fs::read(ca_file).map_err(|e| format!("cannot read the CA file {shown}: {e}"))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the CA file {shown} is not valid PEM: {e}"))?;
    if certificates.is_empty() {
        return Err(format!(
            "the CA file {shown} holds no certificate (expected `-----BEGIN CERTIFICATE-----` sections)"
        ));
    }
    let mut roots = RootCertStore::empty();
    for (index, certificate) in certificates.into_iter().enumerate() {
        roots.add(certificate).map_err(|e| {
            format!(
                "certificate {} of the CA file {shown} cannot be a root: {e}",
                index + 1
            )
        })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS set-up for {shown}: {e}"))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("saferc-judge-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error_of(path: &Path) -> String {
        match trusting(path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_ca_files_are_named_with_what_is_wrong() {
        let missing = Path::new("/nonexistent/ca.pem");
        let e = error_of(missing);
        assert!(
            e.starts_with("cannot read the CA file /nonexistent/ca.pem"),
            "{e}"
        );

        let empty = temp_file("empty.pem", "not a certificate\n");
        let e = error_of(&empty);
        assert!(
            e.contains("holds no certificate") && e.contains("empty.pem"),
            "{e}"
        );

        let broken = temp_file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let e = error_of(&broken);
        assert!(
            e.contains("broken.pem") && e.contains("cannot be a root"),
            "{e}"
        );

        let unterminated = temp_file("unterminated.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let e = error_of(&unterminated);
        assert!(e.contains("is not valid PEM"), "{e}");
        if let Some(dir) = empty.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
