//! What the operator gives on the command line, parsed and checked before anything starts:
//! the bootstrap list and the seed file.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use nodenet_identity::{Identity, SEED_LEN};
use nodenet_kad::NodeId;

/// One `<nodeid-hex>@host:port` entry of `--bootstrap`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BootstrapEntry {
    pub(crate) id: NodeId,
    /// `host:port` as given; resolved when the node starts.
    pub(crate) endpoint: String,
}

/// Why a `--bootstrap` list was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BootstrapError {
    #[error("bootstrap entry {entry:?}: expected <nodeid-hex>@host:port (the NodeId is required)")]
    MissingId { entry: String },
    #[error("bootstrap entry {entry:?}: the NodeId is not 64 hex digits: {reason}")]
    BadId { entry: String, reason: String },
    #[error("bootstrap entry {entry:?}: expected host:port after '@'")]
    BadEndpoint { entry: String },
    #[error("--bootstrap is empty")]
    Empty,
}

/// Parses a comma-separated `--bootstrap` list. Every entry must name its NodeId: peers are
/// authenticated against it, so an address alone cannot be dialed.
pub(crate) fn parse_bootstrap(list: &str) -> Result<Vec<BootstrapEntry>, BootstrapError> {
    let mut out = Vec::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((id, endpoint)) = entry.split_once('@') else {
            return Err(BootstrapError::MissingId {
                entry: entry.to_owned(),
            });
        };
        if id.is_empty() {
            return Err(BootstrapError::MissingId {
                entry: entry.to_owned(),
            });
        }
        let id: NodeId = id.parse().map_err(|e| BootstrapError::BadId {
            entry: entry.to_owned(),
            reason: format!("{e}"),
        })?;
        let port_ok = endpoint
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !port_ok {
            return Err(BootstrapError::BadEndpoint {
                entry: entry.to_owned(),
            });
        }
        out.push(BootstrapEntry {
            id,
            endpoint: endpoint.to_owned(),
        });
    }
    if out.is_empty() {
        return Err(BootstrapError::Empty);
    }
    Ok(out)
}

/// Resolves a `host:port` (a literal address, or a name) to the first address it names.
pub(crate) async fn resolve(endpoint: &str) -> std::io::Result<SocketAddr> {
    if let Ok(a) = endpoint.parse() {
        return Ok(a);
    }
    tokio::net::lookup_host(endpoint)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{endpoint} resolves to no address")))
}

/// Why the seed file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeedError {
    #[error("seed file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("seed file {path}: expected {} hex digits (one 32-byte seed)", SEED_LEN * 2)]
    Malformed { path: PathBuf },
    #[error(
        "seed file {path}: its NodeId {id} has {bits} leading zero bits, below --pow {pow}; \
         point --seed elsewhere to mint a new identity"
    )]
    BelowPow {
        path: PathBuf,
        id: NodeId,
        bits: u32,
        pow: u32,
    },
    #[error("seed file {path}: cannot write it: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("minting an identity at --pow {pow}: {reason}")]
    Mint { pow: u32, reason: String },
    #[error("no --seed given and no config directory ($XDG_CONFIG_HOME or $HOME) to put one in")]
    NoConfigDir,
}

/// Where the seed lives when `--seed` is not given: `$XDG_CONFIG_HOME/nodenet/seed`, else
/// `$HOME/.config/nodenet/seed`.
pub(crate) fn default_seed_path() -> Result<PathBuf, SeedError> {
    let from = |var: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    from("XDG_CONFIG_HOME")
        .or_else(|| from("HOME").map(|h| h.join(".config")))
        .map(|dir| dir.join("nodenet").join("seed"))
        .ok_or(SeedError::NoConfigDir)
}

/// Loads the identity from `path`, or, when the file does not exist, mints one whose NodeId
/// meets `pow` and writes its seed there (the only secret; owner-readable only). Returns the
/// identity and whether it was minted now.
pub(crate) fn load_or_mint(path: &Path, pow: u32) -> Result<(Identity, bool), SeedError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let identity = parse_seed(&text).ok_or_else(|| SeedError::Malformed {
                path: path.to_owned(),
            })?;
            let id = identity.node_id();
            if !nodenet_pow::verify(&id, pow) {
                return Err(SeedError::BelowPow {
                    path: path.to_owned(),
                    id,
                    bits: nodenet_pow::leading_zero_bits(&id),
                    pow,
                });
            }
            Ok((identity, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
            let identity = nodenet_pow::solve(&mut rng, pow).map_err(|e| SeedError::Mint {
                pow,
                reason: e.to_string(),
            })?;
            write_seed(path, identity.seed()).map_err(|source| SeedError::Write {
                path: path.to_owned(),
                source,
            })?;
            Ok((identity, true))
        }
        Err(source) => Err(SeedError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

fn parse_seed(text: &str) -> Option<Identity> {
    let bytes = hex::decode(text.trim()).ok()?;
    let seed: [u8; SEED_LEN] = bytes.try_into().ok()?;
    Some(Identity::from_seed(&seed))
}

/// Writes the seed as hex, creating the directory, readable by the owner only; the file is
/// written under a temporary name and renamed, so a crash never leaves half a seed.
fn write_seed(path: &Path, seed: &[u8; SEED_LEN]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&tmp)?;
    writeln!(f, "{}", hex::encode(seed))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "00ab000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn bootstrap_lists_parse_and_every_mistake_is_named() {
        let list = parse_bootstrap(&format!("{ID}@127.0.0.1:4242, {ID}@seed.example:1")).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].endpoint, "127.0.0.1:4242");
        assert_eq!(list[1].id.to_string(), ID);
        assert!(matches!(
            parse_bootstrap("127.0.0.1:4242"),
            Err(BootstrapError::MissingId { .. })
        ));
        assert!(matches!(
            parse_bootstrap("@127.0.0.1:4242"),
            Err(BootstrapError::MissingId { .. })
        ));
        assert!(matches!(
            parse_bootstrap("abcd@127.0.0.1:4242"),
            Err(BootstrapError::BadId { .. })
        ));
        for bad in ["127.0.0.1", "127.0.0.1:x", ":4242", "host:70000"] {
            assert!(
                matches!(
                    parse_bootstrap(&format!("{ID}@{bad}")),
                    Err(BootstrapError::BadEndpoint { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(parse_bootstrap(" , "), Err(BootstrapError::Empty));
        let msg = parse_bootstrap("nope").unwrap_err().to_string();
        assert!(msg.contains("NodeId is required"), "{msg}");
    }

    #[test]
    fn a_seed_is_minted_once_then_loaded() {
        let dir = std::env::temp_dir().join(format!("nodenet-seed-{}", std::process::id()));
        let path = dir.join("sub").join("seed");
        let _ = std::fs::remove_dir_all(&dir);
        let (minted, fresh) = load_or_mint(&path, 4).unwrap();
        assert!(fresh);
        assert!(nodenet_pow::verify(&minted.node_id(), 4));
        let (loaded, fresh) = load_or_mint(&path, 4).unwrap();
        assert!(!fresh);
        assert_eq!(loaded.node_id(), minted.node_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A stored identity below a raised difficulty is refused, not silently replaced.
        let bits = nodenet_pow::leading_zero_bits(&minted.node_id());
        assert!(matches!(
            load_or_mint(&path, bits + 1),
            Err(SeedError::BelowPow { .. })
        ));
        std::fs::write(&path, "not hex").unwrap();
        assert!(matches!(
            load_or_mint(&path, 0),
            Err(SeedError::Malformed { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
