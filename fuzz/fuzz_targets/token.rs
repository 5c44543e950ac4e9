//! Tokens on arbitrary input. The relay's whole check of a session's token (the JWT's header,
//! the key lookup by `kid`, the signature, expiry, the claims scoped to the connection's path)
//! never panics on arbitrary text; and arbitrary claims signed with the relay's own key (so the
//! checks behind the signature are reached) never panic either, and a grant they yield stays
//! inside the claims' root.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use moq_token::{Algorithm, Claims, Key, KeyId};
use moqcast_relay::auth::{Auth, AuthConfig};

struct Fixture {
    auth: Auth,
    key: Key,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("moqcast-fuzz-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = Key::generate(Algorithm::HS256, Some(KeyId::decode("fuzz").expect("kid")))
            .expect("key");
        key.to_file(dir.join("fuzz.jwk")).expect("key file");
        let auth = Auth::new(&AuthConfig {
            key: Some(dir),
            public_subscribe: vec!["public".into()],
            ..Default::default()
        })
        .expect("auth");
        Fixture { auth, key }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // The connection's path, then the token (or the claims).
    let (path, body) = text.split_once('\n').unwrap_or(("", &text));
    if mode % 2 == 0 {
        let _ = f.auth.session(path, Some(body));
        return;
    }
    let Ok(claims) = serde_json::from_str::<Claims>(body) else {
        return;
    };
    let _ = claims.authorize(path);
    let Ok(token) = f.key.sign(&claims) else {
        return;
    };
    if let Ok(grant) = f.auth.session(path, Some(&token)) {
        // Whatever the claims say, a grant never reaches outside their root.
        // Paths compare by segment: `a//b` is `a/b` (moq-token collapses empty segments).
        let root = claims
            .root
            .split('/')
            .filter(|seg| !seg.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        let root = root.as_str();
        for p in grant.publish.iter().chain(&grant.subscribe) {
            assert!(
                moqcast_relay::auth::has_prefix(p, root)
                    || moqcast_relay::auth::has_prefix(p, "public"),
                "grant {p:?} outside root {root:?}"
            );
        }
    }
});
