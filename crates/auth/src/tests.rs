use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::acl::{self, FilterPattern};
use crate::scram::{DEFAULT_ITERATIONS, Mechanism, ScramClient, ScramCredential, ScramServer};
use crate::{
    AclBinding, AclFile, AclFilter, Acls, AuthError, Decision, Operation, PatternType, Permission,
    Principal, ResourceType, TokenFile, UserFile, plain, tokens,
};

/// RFC 7677's example exchange, byte for byte.
#[test]
fn scram_sha_256_matches_the_rfc_7677_example() {
    let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let salted = Mechanism::Sha256.salt_password(b"pencil", &salt, 4096);
    let cred =
        ScramCredential::from_salted_password(Mechanism::Sha256, salt, &salted, 4096).unwrap();
    let mut s = ScramServer::new(Mechanism::Sha256);
    let first = s
        .client_first_with_nonce(
            b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
            |u| (u == "user").then(|| cred.clone()),
            "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        )
        .unwrap();
    assert_eq!(
        std::str::from_utf8(&first).unwrap(),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    let (who, last) = s
        .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        .unwrap();
    assert_eq!(who, Principal::user("user"));
    assert_eq!(
        std::str::from_utf8(&last).unwrap(),
        "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    );
}

#[test]
fn scram_accepts_the_password_and_refuses_a_wrong_one_or_a_replayed_nonce() {
    for m in Mechanism::ALL {
        let cred = ScramCredential::new(m, "s3cret pass", DEFAULT_ITERATIONS).unwrap();
        let lookup = |u: &str| (u == "al,ice").then(|| cred.clone());
        let run = |password: &str| {
            let mut c = ScramClient::new(m, "al,ice", password);
            let mut s = ScramServer::new(m);
            let first = s.client_first(&c.client_first(), lookup).unwrap();
            let (who, last) = s.client_final(&c.client_final(&first).unwrap())?;
            c.verify_server_final(&last)?;
            Ok::<_, AuthError>(who)
        };
        assert_eq!(run("s3cret pass").unwrap().to_string(), "User:al,ice");
        assert!(matches!(run("wrong"), Err(AuthError::Failed)), "{m:?}");

        // A final message built for another exchange's nonce is refused.
        let mut c = ScramClient::new(m, "al,ice", "s3cret pass");
        let mut a = ScramServer::new(m);
        let fa = a.client_first(&c.client_first(), lookup).unwrap();
        let mut b = ScramServer::new(m);
        b.client_first(&c.client_first(), lookup).unwrap();
        let msg = c.client_final(&fa).unwrap();
        assert!(matches!(b.client_final(&msg), Err(AuthError::Failed)));
        // Older librdkafka repeats its nonce in front of the combined one; Kafka
        // accepts a final nonce that ends with the one it sent, and so does Strata.
        let bare = "n=al=2Cice,r=abc";
        let mut s2 = ScramServer::new(m);
        let first = s2
            .client_first(format!("n,,{bare}").as_bytes(), lookup)
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        let combined = first.split(',').next().unwrap().strip_prefix("r=").unwrap();
        let salted = m.salt_password(b"s3cret pass", &cred.salt, cred.iterations);
        let client_key = m.mac(&salted, b"Client Key");
        let without_proof = format!("c=biws,r=abc{combined}");
        let auth = format!("{bare},{first},{without_proof}");
        let sig = m.mac(&m.hash(&client_key), auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        let last = format!("{without_proof},p={}", B64.encode(proof));
        assert!(s2.client_final(last.as_bytes()).is_ok());
        // Nor can an exchange be finished twice.
        assert!(a.client_final(&msg).is_ok());
        assert!(a.client_final(&msg).is_err());
        // The client checks the server's signature: a wrong one is refused.
        let mut c = ScramClient::new(m, "al,ice", "s3cret pass");
        let mut s = ScramServer::new(m);
        let first = s.client_first(&c.client_first(), lookup).unwrap();
        let (_, last) = s.client_final(&c.client_final(&first).unwrap()).unwrap();
        assert!(c.verify_server_final(&last).is_ok());
        assert!(c.verify_server_final(b"v=AAAA").is_err());
    }
}

#[test]
fn scram_refuses_unknown_users_channel_binding_and_malformed_messages() {
    let m = Mechanism::Sha256;
    let first = |msg: &str| ScramServer::new(m).client_first(msg.as_bytes(), |_| None);
    // An unknown user is challenged like a known one (the same salt each time) and
    // fails only at the proof.
    let mut c = ScramClient::new(m, "bob", "pw");
    let mut s = ScramServer::new(m);
    let challenge = s.client_first(&c.client_first(), |_| None).unwrap();
    let again = ScramServer::new(m)
        .client_first(&c.client_first(), |_| None)
        .unwrap();
    let salt = |b: &[u8]| {
        String::from_utf8(b.to_vec())
            .unwrap()
            .split(',')
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(salt(&challenge), salt(&again));
    assert!(matches!(
        s.client_final(&c.client_final(&challenge).unwrap()),
        Err(AuthError::Failed)
    ));
    for bad in [
        "p=tls-unique,,n=bob,r=x",
        "n,,r=x",
        "n,,n=bob",
        "n,,n=b=ob,r=x",
        "n,a=eve,n=bob,r=x",
        "n,,m=ext,n=bob,r=x",
        "n,,n=bob,r=x,tokenauth=true",
        "",
    ] {
        assert!(matches!(first(bad), Err(AuthError::Invalid(_))), "{bad:?}");
    }
}

#[test]
fn credentials_keep_bounds_and_never_show_their_keys() {
    let m = Mechanism::Sha512;
    assert!(ScramCredential::new(m, "pw", 100).is_err());
    assert!(ScramCredential::new(m, "pw", 100_000).is_err());
    assert!(ScramCredential::new(m, "", 4096).is_err());
    assert!(ScramCredential::from_salted_password(m, vec![1], &[0; 32], 4096).is_err());
    let c = ScramCredential::new(m, "pw", 4096).unwrap();
    assert!(c.verify_password(m, "pw"));
    assert!(!c.verify_password(m, "pW"));
    let shown = format!("{c:?}");
    assert!(!shown.contains(&B64.encode(&c.stored_key)) && !shown.contains("salt"));
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<ScramCredential>(&json).unwrap(), c);
}

#[test]
fn plain_parses_and_refuses_impersonation() {
    let p = plain::parse(b"\0alice\0pw").unwrap();
    assert_eq!((p.user.as_str(), p.password.as_str()), ("alice", "pw"));
    assert!(!format!("{p:?}").contains("pw"));
    assert!(plain::parse(b"alice\0alice\0pw").is_ok());
    assert!(matches!(
        plain::parse(b"admin\0alice\0pw"),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        plain::parse(b"\0alice"),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(plain::parse(b"\0alice\0"), Err(AuthError::Failed)));
}

#[test]
fn token_file_holds_hashes_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let t1 = tokens::generate();
    let ci = Principal::parse("User:ci").unwrap();
    std::fs::write(&path, format!("# tokens\n\n{}\n", tokens::line(&ci, &t1))).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&t1));
    let f = TokenFile::load(&path).unwrap();
    assert_eq!(f.authenticate(&t1), Some(ci.clone()));
    assert_eq!(f.authenticate(&tokens::generate()), None);
    assert_eq!(f.reload_if_changed().unwrap(), None);

    // A malformed file names the line and keeps the tokens in use.
    std::fs::write(&path, "ci sha256:abc\n").unwrap();
    let e = f.reload().unwrap_err().to_string();
    assert!(e.contains("line 1"), "{e}");
    assert_eq!(f.authenticate(&t1), Some(ci.clone()));

    let t2 = tokens::generate();
    let ops = Principal::user("ops");
    std::fs::write(&path, tokens::line(&ops, &t2) + "\n").unwrap();
    assert_eq!(f.reload().unwrap(), 1);
    assert_eq!(f.authenticate(&t1), None);
    assert_eq!(f.authenticate(&t2), Some(ops));
    assert_eq!(tokens::bearer(&format!("Bearer {t2}")).unwrap(), t2);
    // A name with a space could not be read back from the file: refused up front.
    assert!(Principal::parse("User:a b").is_err());
    assert!(tokens::bearer("Basic abc").is_err());
}

#[test]
fn user_file_survives_reopening_and_removes_users() {
    let dir = tempfile::tempdir().unwrap();
    let f = UserFile::open(dir.path()).unwrap();
    let c = ScramCredential::new(Mechanism::Sha256, "pw", 4096).unwrap();
    f.upsert("alice", Mechanism::Sha256, c.clone()).unwrap();
    f.upsert(
        "bob",
        Mechanism::Sha512,
        ScramCredential::new(Mechanism::Sha512, "x", 4096).unwrap(),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("security/users.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the user file is for the broker's user only"
    );
    let again = UserFile::open(dir.path()).unwrap();
    assert_eq!(again.get("alice", Mechanism::Sha256), Some(c));
    assert_eq!(again.get("alice", Mechanism::Sha512), None);
    assert!(again.delete("bob", Mechanism::Sha512).unwrap());
    assert!(!again.delete("bob", Mechanism::Sha512).unwrap());
    let third = UserFile::open(dir.path()).unwrap();
    assert_eq!(third.users().keys().collect::<Vec<_>>(), vec!["alice"]);
    // A damaged file is refused with what to do, not read as empty.
    std::fs::write(dir.path().join("security/users.json"), b"{not json").unwrap();
    let e = UserFile::open(dir.path()).err().unwrap().to_string();
    assert!(e.contains("damaged"), "{e}");
}

fn binding(
    t: ResourceType,
    name: &str,
    pattern: PatternType,
    principal: &str,
    host: &str,
    op: Operation,
    perm: Permission,
) -> AclBinding {
    AclBinding {
        resource_type: t,
        name: name.into(),
        pattern,
        principal: principal.into(),
        host: host.into(),
        operation: op,
        permission: perm,
    }
}

#[test]
fn acls_decide_as_kafka_does() {
    use Decision::*;
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;
    let (alice, bob, carol) = (
        Principal::user("alice"),
        Principal::user("bob"),
        Principal::user("carol"),
    );
    let local: Option<std::net::IpAddr> = Some("127.0.0.1".parse().unwrap());
    let mut acls = Acls::default();
    assert_eq!(
        acls.authorize(&alice, local, Read, Topic, "orders"),
        NoAclFound
    );

    acls.insert(binding(
        Topic,
        "orders",
        Literal,
        "User:alice",
        "*",
        Read,
        Allow,
    ));
    assert_eq!(
        acls.authorize(&alice, local, Read, Topic, "orders"),
        Allowed
    );
    // Read implies Describe, not Write.
    assert_eq!(
        acls.authorize(&alice, local, Describe, Topic, "orders"),
        Allowed
    );
    assert_eq!(
        acls.authorize(&alice, local, Write, Topic, "orders"),
        Denied
    );
    // Another principal: the topic has ACLs, none for bob.
    assert_eq!(acls.authorize(&bob, local, Read, Topic, "orders"), Denied);
    // A topic no binding names, and a group of the same name.
    assert_eq!(
        acls.authorize(&alice, local, Read, Topic, "payments"),
        NoAclFound
    );
    assert_eq!(
        acls.authorize(&alice, local, Read, Group, "orders"),
        NoAclFound
    );

    // Prefixed, for everyone.
    acls.insert(binding(
        Topic, "logs-", Prefixed, "User:*", "*", Write, Allow,
    ));
    assert_eq!(
        acls.authorize(&bob, local, Write, Topic, "logs-web"),
        Allowed
    );
    assert_eq!(acls.authorize(&bob, local, Write, Topic, "log"), NoAclFound);

    // A deny wins over any allow, and All covers every operation.
    acls.insert(binding(Topic, "*", Literal, "User:bob", "*", All, Deny));
    assert_eq!(
        acls.authorize(&bob, local, Write, Topic, "logs-web"),
        Denied
    );
    assert_eq!(acls.authorize(&bob, local, Read, Topic, "payments"), Denied);
    assert_eq!(
        acls.authorize(&alice, local, Write, Topic, "logs-web"),
        Allowed
    );

    // A host pins the address a principal may come from.
    acls.insert(binding(
        Group,
        "g",
        Literal,
        "User:carol",
        "10.0.0.1",
        Read,
        Allow,
    ));
    assert_eq!(acls.authorize(&carol, local, Read, Group, "g"), Denied);
    assert_eq!(acls.authorize(&carol, None, Read, Group, "g"), Denied);
    for seen_as in ["10.0.0.1", "::ffff:10.0.0.1"] {
        // (A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.)
        let h = Some(seen_as.parse().unwrap());
        assert_eq!(acls.authorize(&carol, h, Read, Group, "g"), Allowed);
    }

    // Denying Read does not deny Describe (only All would).
    acls.insert(binding(
        Topic,
        "orders",
        Literal,
        "User:alice",
        "*",
        Read,
        Deny,
    ));
    assert_eq!(acls.authorize(&alice, local, Read, Topic, "orders"), Denied);
    assert_eq!(
        acls.authorize(&alice, local, Describe, Topic, "orders"),
        Allowed
    );
    // A principal whose name starts with another's is not that principal.
    let alice2 = Principal::user("alice2");
    assert_eq!(
        acls.authorize(&alice2, local, Describe, Topic, "orders"),
        Denied
    );

    // AlterConfigs implies DescribeConfigs; a cluster binding.
    acls.insert(binding(
        Cluster,
        acl::CLUSTER_NAME,
        Literal,
        "User:carol",
        "*",
        AlterConfigs,
        Allow,
    ));
    assert_eq!(
        acls.authorize(&carol, local, DescribeConfigs, Cluster, acl::CLUSTER_NAME),
        Allowed
    );
    assert_eq!(
        acls.authorize(&carol, local, Alter, Cluster, acl::CLUSTER_NAME),
        Denied
    );

    // Write on some topic (an idempotent producer's start), unless denied on all.
    assert!(acls.allows_any(&alice, local, Write, Topic));
    assert!(!acls.allows_any(&bob, local, Write, Topic));
    assert!(!acls.allows_any(&carol, local, Read, Topic));
}

#[test]
fn acl_filters_select_what_describe_and_delete_name() {
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;
    let mut acls = Acls::default();
    let lit = binding(Topic, "logs-web", Literal, "User:a", "*", Read, Allow);
    let pre = binding(Topic, "logs-", Prefixed, "User:b", "*", Write, Allow);
    let star = binding(Topic, "*", Literal, "User:c", "*", Describe, Deny);
    let other = binding(Topic, "orders", Literal, "User:a", "*", Read, Allow);
    let group = binding(Group, "logs-web", Literal, "User:a", "*", Read, Allow);
    for b in [&lit, &pre, &star, &other, &group] {
        acls.insert(b.clone());
    }
    let all = AclFilter::default();
    assert_eq!(acls.matching(&all).len(), 5);
    let matching = AclFilter {
        resource_type: Some(Topic),
        name: Some("logs-web".into()),
        pattern: Some(FilterPattern::Match),
        ..Default::default()
    };
    let mut found = acls.matching(&matching);
    found.sort();
    let mut want = vec![lit.clone(), pre.clone(), star.clone()];
    want.sort();
    assert_eq!(found, want);
    let exact = AclFilter {
        name: Some("logs-web".into()),
        pattern: Some(FilterPattern::Exactly(Literal)),
        ..Default::default()
    };
    assert_eq!(acls.matching(&exact).len(), 2, "the topic and the group");
    let by_principal = AclFilter {
        principal: Some("User:a".into()),
        operation: Some(Read),
        ..Default::default()
    };
    assert_eq!(acls.matching(&by_principal).len(), 3);

    // Names and codes round-trip as Kafka spells them.
    assert_eq!(
        "describe-configs".parse::<Operation>().unwrap(),
        DescribeConfigs
    );
    assert_eq!(
        "IDEMPOTENT_WRITE".parse::<Operation>().unwrap(),
        IdempotentWrite
    );
    for op in Operation::ALL {
        assert_eq!(Operation::from_code(op.code()).unwrap(), Some(*op));
    }
    assert_eq!(Operation::from_code(1).unwrap(), None, "ANY");
    assert!(
        Operation::from_code(13).is_err(),
        "CreateTokens is not offered"
    );
    assert_eq!(
        FilterPattern::from_code(2).unwrap(),
        Some(FilterPattern::Match)
    );
    assert!(
        "Reed"
            .parse::<Operation>()
            .unwrap_err()
            .to_string()
            .contains("Read")
    );
}

#[test]
fn acl_bindings_are_checked_before_they_are_stored() {
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;
    let ok = binding(Topic, "t", Literal, "User:alice", "*", Read, Allow);
    ok.validate().unwrap();
    binding(Topic, "t", Literal, "User:*", "10.1.2.3", Read, Allow)
        .validate()
        .unwrap();
    let bad = [
        (
            binding(Topic, "t", Literal, "alice", "*", Read, Allow),
            "User:NAME",
        ),
        (
            binding(Topic, "t", Literal, "Group:x", "*", Read, Allow),
            "User:NAME",
        ),
        (
            binding(Topic, "t", Literal, "User:a", "host.example", Read, Allow),
            "IP address",
        ),
        (
            binding(Topic, "", Literal, "User:a", "*", Read, Allow),
            "empty",
        ),
        (
            binding(Cluster, "c", Literal, "User:a", "*", Alter, Allow),
            "kafka-cluster",
        ),
        (
            binding(Group, "g", Literal, "User:a", "*", Write, Allow),
            "does not apply",
        ),
        (
            binding(Topic, "*", Prefixed, "User:a", "*", Read, Allow),
            "literal *",
        ),
    ];
    for (b, why) in bad {
        let e = b.validate().unwrap_err().to_string();
        assert!(e.contains(why), "{b}: {e}");
    }
}

#[test]
fn acl_file_keeps_bindings_across_reopening() {
    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;
    let dir = tempfile::tempdir().unwrap();
    let f = AclFile::open(dir.path()).unwrap();
    let a = binding(Topic, "t", Literal, "User:alice", "*", Read, Allow);
    let b = binding(Group, "g", Prefixed, "User:bob", "*", Read, Allow);
    f.create(vec![a.clone(), b.clone()]).unwrap();
    // A bad binding is refused, and nothing of its batch is stored.
    let bad = binding(Topic, "t", Literal, "bob", "*", Read, Allow);
    let c = binding(Topic, "c", Literal, "User:c", "*", Read, Allow);
    assert!(f.create(vec![c.clone(), bad]).is_err());
    let again = AclFile::open(dir.path()).unwrap();
    assert_eq!(again.acls().len(), 2);
    assert!(!again.acls().contains(&c));
    let removed = again
        .delete(&[AclFilter {
            principal: Some("User:bob".into()),
            ..Default::default()
        }])
        .unwrap();
    assert_eq!(removed, vec![vec![b]]);
    let third = AclFile::open(dir.path()).unwrap();
    assert_eq!(third.acls().iter().collect::<Vec<_>>(), vec![&a]);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join("security/acls.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}
