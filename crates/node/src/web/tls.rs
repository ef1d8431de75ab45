//! TLS for a web server bound to a non-loopback address: the user's own
//! certificate, or a self-signed one the node generates once (rcgen) and
//! keeps under `$AGENTOS_HOME/web/` (key mode 0600). Share links carry the
//! certificate's SHA-256 fingerprint so `agentos join` can pin it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// PEM certificate + key, and the certificate's fingerprint (hex SHA-256 of
/// the DER).
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub fingerprint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    NoCert { path: PathBuf },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint(cert_pem: &[u8], path: &Path) -> Result<String, TlsError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let der = CertificateDer::pem_slice_iter(cert_pem)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::NoCert {
            path: path.to_path_buf(),
        })?;
    Ok(data_encoding::HEXLOWER.encode(&Sha256::digest(der.as_ref())))
}

/// Load the configured pair, or the generated one (creating it if needed)
/// with `names` (host names and addresses) as its subject alternative names.
pub fn load_or_create(
    dir: &Path,
    cert: Option<&Path>,
    key: Option<&Path>,
    names: Vec<String>,
) -> Result<TlsMaterial, TlsError> {
    if let (Some(c), Some(k)) = (cert, key) {
        let cert_pem = read(c)?;
        let key_pem = read(k)?;
        let fingerprint = fingerprint(&cert_pem, c)?;
        return Ok(TlsMaterial {
            cert_pem,
            key_pem,
            fingerprint,
        });
    }
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        let cert_pem = read(&cert_path)?;
        let key_pem = read(&key_path)?;
        let fingerprint = fingerprint(&cert_pem, &cert_path)?;
        return Ok(TlsMaterial {
            cert_pem,
            key_pem,
            fingerprint,
        });
    }
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert_pem = generated.cert.pem().into_bytes();
    let key_pem = generated.key_pair.serialize_pem().into_bytes();
    let write = |path: &Path, bytes: &[u8], mode: u32| -> Result<(), TlsError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let e = |source| TlsError::Write {
            path: path.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(e)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(path)
            .map_err(e)?;
        f.write_all(bytes).map_err(e)
    };
    write(&key_path, &key_pem, 0o600)?;
    write(&cert_path, &cert_pem, 0o644)?;
    let fingerprint = fingerprint(&cert_pem, &cert_path)?;
    Ok(TlsMaterial {
        cert_pem,
        key_pem,
        fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path(), None, None, vec!["localhost".into()]).unwrap();
        let b = load_or_create(dir.path(), None, None, vec!["other".into()]).unwrap();
        assert_eq!(a.fingerprint, b.fingerprint);
        assert_eq!(a.fingerprint.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
