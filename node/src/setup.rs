//! Getting a node going: identities, contacts and addresses from what a user types.

use std::net::SocketAddr;
use std::str::FromStr;

use nodenet_identity::Identity;
use nodenet_kad::NodeId;
use nodenet_routing::Contact;
use nodenet_wire::Addr;

/// Mints a fresh identity whose NodeId meets `difficulty` (leading zero bits), on all cores,
/// from the operating system's randomness. Each bit doubles the expected work (2^bits
/// BLAKE2b hashes and Ed25519 key derivations): 8 takes milliseconds; 16 took 0.2–0.9 s on a
/// 2-core machine in a release build and 2.5–12 s in a debug one (optimise dependencies in
/// dev builds: `[profile.dev.package."*"] opt-level = 2`). It blocks: mint before starting
/// the runtime, or in `spawn_blocking`, or mint once and keep the seed. Keep [`Identity::seed`] (32 bytes, the only
/// secret) to be the same node next time: [`Identity::from_seed`] restores it, and
/// [`write_seed_file`] / [`read_seed_file`] keep it on disk with mode 0600.
///
/// # Errors
/// [`SolveError::Unsatisfiable`] above 256 bits.
///
/// [`write_seed_file`]: crate::write_seed_file
/// [`read_seed_file`]: crate::read_seed_file
/// [`SolveError::Unsatisfiable`]: crate::SolveError::Unsatisfiable
pub fn mint_identity(difficulty: u32) -> Result<Identity, nodenet_pow::SolveError> {
    let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
    nodenet_pow::solve(&mut rng, difficulty)
}

/// The address of a QUIC node at `addr`, as [`Contact`]s and [`crate::Builder::advertise`]
/// take it.
pub fn quic_addr(addr: SocketAddr) -> Addr {
    Addr::new(nodenet_transport::quic::NET, addr.to_string())
}

/// Parses `<nodeid-hex>@ip:port` (what the CLI's `--bootstrap` takes, and
/// [`crate::Node::contact_string`] prints) into a QUIC contact: a NodeId to authenticate, and
/// where to dial it.
///
/// ```
/// let c = nodenet::parse_contact(
///     "00000a3f2b0c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6@127.0.0.1:4242",
/// )?;
/// assert_eq!(c.addrs[0].endpoint, "127.0.0.1:4242");
/// # Ok::<(), nodenet::ContactError>(())
/// ```
///
/// # Errors
/// [`ContactError`] names the part that is wrong.
pub fn parse_contact(s: &str) -> Result<Contact, ContactError> {
    let s = s.trim();
    let (id, endpoint) = s.split_once('@').ok_or_else(|| ContactError::MissingId {
        input: s.to_owned(),
    })?;
    let id = NodeId::from_str(id).map_err(|e| ContactError::BadId {
        input: s.to_owned(),
        reason: e.to_string(),
    })?;
    let addr = SocketAddr::from_str(endpoint).map_err(|_| ContactError::BadEndpoint {
        input: s.to_owned(),
    })?;
    Ok(Contact::new(id, vec![quic_addr(addr)]))
}

/// Why [`parse_contact`] refused its input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ContactError {
    /// No `@`: a contact must name the NodeId it will be authenticated against.
    #[error("contact {input:?}: expected <nodeid-hex>@ip:port (the NodeId is required)")]
    MissingId {
        /// The input.
        input: String,
    },
    /// The part before `@` is not a NodeId.
    #[error("contact {input:?}: the NodeId is not 64 hex digits: {reason}")]
    BadId {
        /// The input.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The part after `@` is not an `ip:port` literal (resolve host names first).
    #[error("contact {input:?}: expected an ip:port after '@' (resolve host names first)")]
    BadEndpoint {
        /// The input.
        input: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_parse_and_every_mistake_is_named() {
        let id = "00".repeat(32);
        let c = parse_contact(&format!(" {id}@[::1]:7 ")).unwrap();
        assert_eq!(c.id, NodeId::from_str(&id).unwrap());
        assert_eq!(c.addrs, vec![quic_addr("[::1]:7".parse().unwrap())]);
        assert!(matches!(
            parse_contact("127.0.0.1:1"),
            Err(ContactError::MissingId { .. })
        ));
        assert!(matches!(
            parse_contact("abc@127.0.0.1:1"),
            Err(ContactError::BadId { .. })
        ));
        assert!(matches!(
            parse_contact(&format!("{id}@example.org:1")),
            Err(ContactError::BadEndpoint { .. })
        ));
    }

    #[test]
    fn minted_identities_meet_the_difficulty_and_differ() {
        let a = mint_identity(8).unwrap();
        let b = mint_identity(8).unwrap();
        assert!(nodenet_pow::verify(&a.node_id(), 8));
        assert_ne!(a.node_id(), b.node_id());
    }
}
