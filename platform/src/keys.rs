//! The Ed25519 key files that sign and verify access tokens: reading and writing them as PEM
//! (PKCS#8 for the private key, SPKI for the public one), making a pair on first start, and
//! resolving which files to use from the configuration of CONTRACT.md (`HMS_JWT_PRIVATE_KEY`,
//! `HMS_JWT_PUBLIC_KEY`, `HMS_DATA_DIR`).

use crate::token::{TokenSigner, TokenVerifier};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The private key's file name in `$HMS_DATA_DIR` when none is configured.
pub const PRIVATE_KEY_FILE: &str = "jwt_private.pem";
/// The public key's file name in `$HMS_DATA_DIR` when none is configured.
pub const PUBLIC_KEY_FILE: &str = "jwt_public.pem";

const PRIVATE_KEY_MODE: u32 = 0o600;
const PUBLIC_KEY_MODE: u32 = 0o644;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("could not write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "private key {} is open to group or others (mode {mode:03o}); run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    PrivateKeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{} is not an Ed25519 private key in PKCS#8 PEM: {reason}", path.display())]
    BadPrivateKey { path: PathBuf, reason: String },
    #[error("{} is not an Ed25519 public key in SPKI PEM: {reason}", path.display())]
    BadPublicKey { path: PathBuf, reason: String },
    #[error("could not encode the key as PEM: {0}")]
    Encode(String),
    #[error(
        "found {} but not {}: restore the private key, or remove both to make a new pair",
        found.display(),
        missing.display()
    )]
    HalfPair { found: PathBuf, missing: PathBuf },
    #[error("public key {} does not belong to private key {}", public.display(), private.display())]
    Mismatch { private: PathBuf, public: PathBuf },
}

/// Reads an Ed25519 private key from a PKCS#8 PEM file, refusing one that group or others may
/// read or write.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let read_error = |source| KeyError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_error)?;
    // The mode of the file as opened, not of whatever the path names a moment later.
    refuse_open_private_key(path, &file.metadata().map_err(read_error)?)?;
    let mut pem = String::new();
    file.read_to_string(&mut pem).map_err(read_error)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::BadPrivateKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads the private key at `path`, or, if there is no file, makes a new one there (mode 0600,
/// parent folders created). Two processes starting together end up with the same key: the
/// file is never replaced once it exists.
pub fn load_or_create_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    if exists(path)? {
        return read_signing_key(path);
    }
    let key = SigningKey::generate(&mut rand_core::OsRng);
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let staged = stage(path, pem.as_bytes(), PRIVATE_KEY_MODE)?;
    match staged.persist_noclobber(path) {
        Ok(_) => {
            sync_parent(path)?;
            Ok(key)
        }
        // Another process made it between our look and our write: use theirs.
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => read_signing_key(path),
        Err(e) => Err(KeyError::Write {
            path: path.to_owned(),
            source: e.error,
        }),
    }
}

/// Writes (or replaces) a public key as SPKI PEM, mode 0644.
pub fn write_public_key(path: &Path, key: &VerifyingKey) -> Result<(), KeyError> {
    let pem = key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| KeyError::Encode(e.to_string()))?;
    let staged = stage(path, pem.as_bytes(), PUBLIC_KEY_MODE)?;
    staged.persist(path).map_err(|e| KeyError::Write {
        path: path.to_owned(),
        source: e.error,
    })?;
    sync_parent(path)
}

/// Writes (or replaces) a secret that is not a key (a generated password), mode 0600, atomically.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let staged = stage(path, contents, PRIVATE_KEY_MODE)?;
    staged.persist(path).map_err(|e| KeyError::Write {
        path: path.to_owned(),
        source: e.error,
    })?;
    sync_parent(path)
}

/// Reads an Ed25519 public key from an SPKI PEM file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| KeyError::BadPublicKey {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Which key files a process uses, as [`resolve_jwt_keys`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JwtKeyFiles {
    /// The process can mint tokens. Without a public key file, the verifying key is derived
    /// from the private one.
    Signing {
        private: PathBuf,
        public: Option<PathBuf>,
    },
    /// Only the public key is configured: the process verifies tokens and never mints (an edge).
    VerifyOnly { public: PathBuf },
}

/// Resolves the token keys from `HMS_JWT_PRIVATE_KEY` (`private`), `HMS_JWT_PUBLIC_KEY`
/// (`public`) and `HMS_DATA_DIR` (`data_dir`). Configured paths are used as they are and never
/// created. When neither is configured, the pair is [`PRIVATE_KEY_FILE`] and
/// [`PUBLIC_KEY_FILE`] in `data_dir`: made on first start, reused afterwards.
pub fn resolve_jwt_keys(
    private: Option<&Path>,
    public: Option<&Path>,
    data_dir: &Path,
) -> Result<JwtKeyFiles, KeyError> {
    match (private, public) {
        (Some(private), public) => Ok(JwtKeyFiles::Signing {
            private: private.to_owned(),
            public: public.map(Path::to_owned),
        }),
        (None, Some(public)) => Ok(JwtKeyFiles::VerifyOnly {
            public: public.to_owned(),
        }),
        (None, None) => {
            let private = data_dir.join(PRIVATE_KEY_FILE);
            let public = data_dir.join(PUBLIC_KEY_FILE);
            match (exists(&private)?, exists(&public)?) {
                (true, true) => {}
                // A new private key would silently invalidate the public key others hold.
                (false, true) => {
                    return Err(KeyError::HalfPair {
                        found: public,
                        missing: private,
                    });
                }
                // The public key is derived from the private one, so a lost one is rewritten.
                (_, false) => {
                    let key = load_or_create_signing_key(&private)?;
                    write_public_key(&public, &key.verifying_key())?;
                }
            }
            Ok(JwtKeyFiles::Signing {
                private,
                public: Some(public),
            })
        }
    }
}

/// The token keys a process holds, read from its [`JwtKeyFiles`].
#[derive(Debug)]
pub struct JwtKeys {
    signing: Option<SigningKey>,
    verifying: VerifyingKey,
}

impl JwtKeyFiles {
    /// Reads the files, checking that a configured public key belongs to the private key: a
    /// mismatch would make every token minted here fail elsewhere.
    pub fn load(&self) -> Result<JwtKeys, KeyError> {
        match self {
            JwtKeyFiles::Signing { private, public } => {
                let signing = read_signing_key(private)?;
                if let Some(public) = public
                    && read_public_key(public)? != signing.verifying_key()
                {
                    return Err(KeyError::Mismatch {
                        private: private.clone(),
                        public: public.clone(),
                    });
                }
                Ok(JwtKeys {
                    verifying: signing.verifying_key(),
                    signing: Some(signing),
                })
            }
            JwtKeyFiles::VerifyOnly { public } => Ok(JwtKeys {
                signing: None,
                verifying: read_public_key(public)?,
            }),
        }
    }
}

impl JwtKeys {
    /// The signer, when this process holds the private key.
    pub fn signer(&self) -> Option<TokenSigner> {
        self.signing.as_ref().map(TokenSigner::from_signing_key)
    }

    pub fn verifier(&self) -> TokenVerifier {
        TokenVerifier::from_verifying_key(&self.verifying)
    }

    /// The verifying key as SPKI PEM: what edges are given to trust.
    pub fn public_pem(&self) -> Result<String, KeyError> {
        self.verifying
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| KeyError::Encode(e.to_string()))
    }
}

/// The verifier of a process that only checks tokens (an edge): the configured public key, or
/// [`PUBLIC_KEY_FILE`] in `data_dir`. Never makes a key: one made here would verify nothing
/// that anyone else signed.
pub fn load_verifier(public: Option<&Path>, data_dir: &Path) -> Result<TokenVerifier, KeyError> {
    let path = public.map_or_else(|| data_dir.join(PUBLIC_KEY_FILE), Path::to_owned);
    Ok(TokenVerifier::from_verifying_key(&read_public_key(&path)?))
}

fn exists(path: &Path) -> Result<bool, KeyError> {
    path.try_exists().map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `contents` to a new temporary file beside `path`, with `mode` from the start and
/// flushed to disk, ready to be renamed over `path`: a reader sees no file or the whole key,
/// never half of one.
fn stage(path: &Path, contents: &[u8], mode: u32) -> Result<tempfile::NamedTempFile, KeyError> {
    let write_error = |source| KeyError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".key-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(fs::Permissions::from_mode(mode));
    }
    let mut file = builder.tempfile_in(dir).map_err(write_error)?;
    // The umask may have narrowed the mode given at creation; chmod is not subject to it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(write_error)?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    file.write_all(contents).map_err(write_error)?;
    file.as_file().sync_all().map_err(write_error)?;
    Ok(file)
}

/// Makes the rename itself durable.
fn sync_parent(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        let dir = parent_dir(path);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| KeyError::Write {
                path: dir.to_owned(),
                source,
            })?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

#[cfg(unix)]
fn refuse_open_private_key(path: &Path, metadata: &fs::Metadata) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::PrivateKeyTooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn refuse_open_private_key(_path: &Path, _metadata: &fs::Metadata) -> Result<(), KeyError> {
    Ok(())
}

// The tests check unix modes.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::token::Claims;
    use domain::values::{OrgId, Role, UserId};
    use std::os::unix::fs::PermissionsExt;
    use uuid::Uuid;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_missing_private_key_is_made_with_mode_0600_in_new_folders_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/key.pem");
        let made = load_or_create_signing_key(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
        let again = load_or_create_signing_key(&path).unwrap();
        assert_eq!(made.to_bytes(), again.to_bytes());
        // No temporary file is left beside it.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_private_key_readable_by_others_is_refused_naming_the_path_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        load_or_create_signing_key(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create_signing_key(&path).unwrap_err();
        assert!(matches!(
            err,
            KeyError::PrivateKeyTooOpen { mode: 0o644, .. }
        ));
        let message = err.to_string();
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("644"), "{message}");
    }

    #[test]
    fn a_file_that_is_not_a_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        fs::write(&path, "not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            read_signing_key(&path),
            Err(KeyError::BadPrivateKey { .. })
        ));
    }

    #[test]
    fn a_public_key_round_trips_as_spki_pem_with_mode_0644() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pub.pem");
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        write_public_key(&path, &key).unwrap();
        assert_eq!(mode(&path), 0o644);
        assert!(
            fs::read_to_string(&path)
                .unwrap()
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        assert_eq!(read_public_key(&path).unwrap(), key);
    }

    #[test]
    fn with_nothing_configured_a_pair_is_made_in_the_data_dir_once() {
        let dir = tempfile::tempdir().unwrap();
        let files = resolve_jwt_keys(None, None, dir.path()).unwrap();
        let private = dir.path().join(PRIVATE_KEY_FILE);
        let public = dir.path().join(PUBLIC_KEY_FILE);
        assert_eq!(
            files,
            JwtKeyFiles::Signing {
                private: private.clone(),
                public: Some(public.clone())
            }
        );
        let first = fs::read(&private).unwrap();
        resolve_jwt_keys(None, None, dir.path()).unwrap();
        assert_eq!(fs::read(&private).unwrap(), first, "the pair is reused");

        let keys = files.load().unwrap();
        let token = keys.signer().unwrap().mint(&Claims::new(
            UserId::from_uuid(Uuid::from_u128(1)),
            OrgId::SYSTEM,
            vec![Role::Admin],
            None,
            60,
            crate::token::unix_now(),
        ));
        let verifier = load_verifier(None, dir.path()).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().roles, vec![Role::Admin]);
    }

    #[test]
    fn a_lost_public_key_is_derived_again_but_a_lost_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        resolve_jwt_keys(None, None, dir.path()).unwrap();
        let public = dir.path().join(PUBLIC_KEY_FILE);
        let first = fs::read(&public).unwrap();
        fs::remove_file(&public).unwrap();
        resolve_jwt_keys(None, None, dir.path()).unwrap();
        assert_eq!(fs::read(&public).unwrap(), first);

        fs::remove_file(dir.path().join(PRIVATE_KEY_FILE)).unwrap();
        let err = resolve_jwt_keys(None, None, dir.path()).unwrap_err();
        assert!(matches!(err, KeyError::HalfPair { .. }), "{err}");
        assert!(!dir.path().join(PRIVATE_KEY_FILE).exists());
    }

    #[test]
    fn configured_paths_are_used_as_they_are_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("configured.pem");
        let files = resolve_jwt_keys(Some(&private), None, dir.path()).unwrap();
        assert_eq!(
            files,
            JwtKeyFiles::Signing {
                private: private.clone(),
                public: None
            }
        );
        assert!(matches!(files.load(), Err(KeyError::Read { .. })));
        assert!(!private.exists());
        assert!(!dir.path().join(PRIVATE_KEY_FILE).exists());

        let public = dir.path().join("edge.pem");
        let files = resolve_jwt_keys(None, Some(&public), dir.path()).unwrap();
        assert_eq!(files, JwtKeyFiles::VerifyOnly { public });
    }

    #[test]
    fn a_public_key_of_another_pair_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let private = dir.path().join("private.pem");
        let public = dir.path().join("public.pem");
        load_or_create_signing_key(&private).unwrap();
        write_public_key(&public, &SigningKey::from_bytes(&[9; 32]).verifying_key()).unwrap();
        let files = resolve_jwt_keys(Some(&private), Some(&public), dir.path()).unwrap();
        assert!(matches!(files.load(), Err(KeyError::Mismatch { .. })));
    }

    #[test]
    fn a_verify_only_process_holds_no_signer() {
        let dir = tempfile::tempdir().unwrap();
        let public = dir.path().join("public.pem");
        write_public_key(&public, &SigningKey::from_bytes(&[3; 32]).verifying_key()).unwrap();
        let keys = JwtKeyFiles::VerifyOnly { public }.load().unwrap();
        assert!(keys.signer().is_none());
    }

    #[test]
    fn an_edge_without_a_public_key_is_told_which_file_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_verifier(None, dir.path()).unwrap_err();
        assert!(err.to_string().contains(PUBLIC_KEY_FILE), "{err}");
        assert!(!dir.path().join(PRIVATE_KEY_FILE).exists());
    }
}
