//! The Apertium provider with the real program (Debian `apertium` + `apertium-eng-spa`, which
//! scripts/setup.sh installs; the test fails, naming the fix, when they are missing).

use std::path::Path;
use std::time::{Duration, Instant};

use moqcast_sidecar::providers::apertium::{datadir, Apertium};
use moqcast_sidecar::stage::{Provider, TranslateRequest};

fn request(text: &str) -> TranslateRequest {
    TranslateRequest {
        text: text.into(),
        ..TranslateRequest::probe("en", "es")
    }
}

fn english_spanish() -> Apertium {
    Apertium::new("apertium", &datadir(None), "en", "es").unwrap_or_else(|e| {
        panic!("{e} (scripts/setup.sh installs Debian's apertium and apertium-eng-spa)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apertium_translates_captions_in_one_long_lived_pipeline() {
    let a = english_spanish();
    assert_eq!(a.mode(), "eng-spa");
    let first = a
        .call(request("The weather today is sunny and warm."))
        .await
        .unwrap();
    assert_eq!(first, "El tiempo hoy es soleado y tibio.");
    // Characters Apertium's stream format reserves come through as text.
    let odd = a
        .call(request(
            "It costs 5 dollars [maybe] / 10 <euros> $ @ \\ {x}",
        ))
        .await
        .unwrap();
    for kept in ["5", "[", "]", "/", "10", "<", ">", "$", "@", "\\", "{", "}"] {
        assert!(odd.contains(kept), "{kept:?} lost: {odd:?}");
    }
    // No added full stop, and a question stays one.
    assert_eq!(
        a.call(request("no punctuation here")).await.unwrap(),
        "Ninguna puntuación aquí"
    );
    let q = a.call(request("Where is the station?")).await.unwrap();
    assert!(q.starts_with("Dónde") && q.ends_with('?'), "{q:?}");
    // A running pipeline answers in milliseconds; a new `apertium` process costs 0.3-0.6 s.
    let mut took = Vec::new();
    for i in 0..10 {
        let t = Instant::now();
        let out = a
            .call(request(&format!("The train leaves at {i} o'clock.")))
            .await
            .unwrap();
        took.push(t.elapsed());
        assert!(out.contains(&i.to_string()), "{out:?}");
    }
    took.sort();
    assert!(took[5] < Duration::from_millis(250), "median {:?}", took[5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warming_starts_the_pipeline_before_the_first_caption() {
    let a = english_spanish();
    assert!(
        !a.is_running(),
        "nothing runs before the first call or warm-up"
    );
    a.warm().await;
    assert!(a.is_running(), "the warm-up left a pipeline running");
    // A second warm-up keeps it; the caption goes through the same pipeline.
    a.warm().await;
    let out = a.call(request("Thank you for watching.")).await.unwrap();
    assert!(out.starts_with("Gracias"), "{out:?}");
    assert!(a.is_running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_call_kills_the_pipeline_and_the_next_call_restarts_it() {
    let a = english_spanish();
    a.call(request("Hello.")).await.unwrap();
    // A chain abandons a call past its timeout by dropping it, mid-caption.
    let long = "The council has approved plans for a new bridge over the river. ".repeat(200);
    let abandoned = tokio::time::timeout(Duration::from_millis(1), a.call(request(&long))).await;
    assert!(abandoned.is_err(), "the call was abandoned");
    let out = a.call(request("Thank you for watching.")).await.unwrap();
    assert!(out.starts_with("Gracias"), "{out:?}");
}

#[test]
fn a_missing_installation_says_how_to_get_one() {
    let e = Apertium::new("apertium", Path::new("/nonexistent/apertium"), "en", "es")
        .err()
        .unwrap();
    assert!(
        e.contains("Apertium is not installed") && e.contains("setup.sh"),
        "{e}"
    );
    let e = Apertium::new("apertium", &datadir(None), "en", "de")
        .err()
        .unwrap();
    assert!(e.contains("no Apertium pair for en->de"), "{e}");
    assert!(e.contains("eng-spa"), "lists what is installed: {e}");
}
