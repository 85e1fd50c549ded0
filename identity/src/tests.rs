#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, known values"
)]

use std::path::PathBuf;

use hkdf::Hkdf;
use nodenet_testkit::{hex32, vectors};
use proptest::prelude::*;
use sha2::Sha256;

use super::*;

#[test]
fn known_answers_from_the_reference() {
    let v = vectors();
    let cases = v["identity"]["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 4);
    for case in cases {
        let what = case["description"].as_str().unwrap();
        let seed = hex32(&case["seed"]);
        let (prk, _) = Hkdf::<Sha256>::extract(None, &seed);
        assert_eq!(prk.as_slice(), hex32(&case["hkdf_prk"]), "{what}: prk");

        let id = Identity::from_seed(&seed);
        assert_eq!(
            id.signing.to_bytes(),
            hex32(&case["ed25519_seed"]),
            "{what}: ed seed"
        );
        assert_eq!(
            id.ed_public(),
            hex32(&case["ed25519_pub"]),
            "{what}: ed pub"
        );
        assert_eq!(
            id.kex.to_bytes(),
            hex32(&case["x25519_priv"]),
            "{what}: x priv"
        );
        assert_eq!(id.x_public(), hex32(&case["x25519_pub"]), "{what}: x pub");
        let node_id = NodeId::from_bytes(hex32(&case["node_id"]));
        assert_eq!(id.node_id(), node_id, "{what}: node id");
        assert_eq!(node_id_from_seed(&seed), node_id, "{what}: fast path");
        assert_eq!(derive_id(&id.ed_public()), node_id, "{what}: derive_id");
        assert_eq!(
            u64::from(node_id.leading_zeros()),
            case["leading_zero_bits"].as_u64().unwrap(),
            "{what}: leading zeros"
        );

        let msg = hex::decode(case["sign_msg"].as_str().unwrap()).unwrap();
        let sig: [u8; 64] = hex::decode(case["sign_sig"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(id.sign(&msg), sig, "{what}: signature");
        assert_eq!(verify(&id.ed_public(), &msg, &sig), Ok(()));
    }
}

#[test]
fn labels_match_the_reference() {
    let v = vectors();
    let labels = &v["constants"]["labels"];
    assert_eq!(
        labels["hkdf_ed25519"].as_str().unwrap().as_bytes(),
        LABEL_ED25519
    );
    assert_eq!(
        labels["hkdf_x25519"].as_str().unwrap().as_bytes(),
        LABEL_X25519
    );
}

#[test]
fn checked_in_vectors_match_shared() {
    // testdata/ carries a copy so a clean clone can run the tests; when the shared folder the
    // vectors came from sits beside the repository, the copy must not have drifted from it.
    let shared =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/vectors/nodenet-v1.json");
    match std::fs::read_to_string(&shared) {
        Ok(s) => assert_eq!(s, include_str!("../../testdata/nodenet-v1.json")),
        Err(_) => eprintln!("skipped: {} not present", shared.display()),
    }
}

#[test]
fn tampering_fails_verification() {
    let id = Identity::from_seed(&[7; 32]);
    let sig = id.sign(b"hello");
    assert_eq!(
        verify(&id.ed_public(), b"hellp", &sig),
        Err(VerifyError::BadSignature)
    );
    let mut bad = sig;
    bad[3] ^= 1;
    assert_eq!(
        verify(&id.ed_public(), b"hello", &bad),
        Err(VerifyError::BadSignature)
    );
    let other = Identity::from_seed(&[8; 32]);
    assert_eq!(
        verify(&other.ed_public(), b"hello", &sig),
        Err(VerifyError::BadSignature)
    );
    // The identity point is of small order: refused as a key.
    let mut small = [0u8; 32];
    small[0] = 1;
    assert_eq!(
        verify(&small, b"hello", &sig),
        Err(VerifyError::BadPublicKey)
    );
}

#[test]
fn key_agreement_is_symmetric_and_refuses_low_order_points() {
    let a = Identity::from_seed(&[1; 32]);
    let b = Identity::from_seed(&[2; 32]);
    let ab = a.key_agreement(&b.x_public()).unwrap();
    let ba = b.key_agreement(&a.x_public()).unwrap();
    assert_eq!(*ab, *ba);
    assert!(a.key_agreement(&[0; 32]).is_none());
}

#[test]
fn debug_never_shows_secrets() {
    let seed = [0xab; 32];
    let id = Identity::from_seed(&seed);
    let dbg = format!("{id:?}");
    assert!(dbg.contains(&id.node_id().to_string()));
    assert!(!dbg.contains("abababab"), "{dbg}");
    assert!(!dbg.contains(&hex::encode(id.signing.to_bytes())));
    assert!(!dbg.contains(&hex::encode(id.kex.to_bytes())));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fast_path_agrees_with_full_derivation(seed in any::<[u8; 32]>()) {
        let id = Identity::from_seed(&seed);
        prop_assert_eq!(node_id_from_seed(&seed), id.node_id());
        let copy = id.clone();
        prop_assert_eq!(copy.node_id(), id.node_id());
        prop_assert_eq!(id.seed(), &seed);
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nodenet-identity-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn seed_file_round_trip_is_private() {
    let dir = scratch("roundtrip");
    let path = dir.join("sub/node.seed");
    write_seed_file(&path, &[9; 32]).unwrap();
    assert_eq!(*read_seed_file(&path).unwrap(), [9; 32]);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
    // No temporary file is left behind.
    assert_eq!(
        std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1
    );
    // An existing identity is never overwritten.
    assert!(matches!(
        write_seed_file(&path, &[1; 32]),
        Err(SeedFileError::AlreadyExists { .. })
    ));
    assert_eq!(*read_seed_file(&path).unwrap(), [9; 32]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn seed_file_refusals_say_which() {
    let dir = scratch("refusals");
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.seed");
    assert!(matches!(
        read_seed_file(&missing),
        Err(SeedFileError::Io { .. })
    ));

    let short = dir.join("short.seed");
    write_private(&short, &[1; 31]);
    let err = read_seed_file(&short).unwrap_err();
    assert!(
        matches!(err, SeedFileError::WrongLength { len: 31, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("31 bytes"));

    let long = dir.join("long.seed");
    write_private(&long, &[1; 33]);
    assert!(matches!(
        read_seed_file(&long),
        Err(SeedFileError::WrongLength { len: 33, .. })
    ));

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let open = dir.join("open.seed");
        write_private(&open, &[1; 32]);
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = read_seed_file(&open).unwrap_err();
            assert!(
                matches!(err, SeedFileError::TooPermissive { mode: m, .. } if m == mode),
                "{err}"
            );
            assert!(err.to_string().contains("want 600"));
        }
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(*read_seed_file(&open).unwrap(), [1; 32]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn write_private(path: &std::path::Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}
