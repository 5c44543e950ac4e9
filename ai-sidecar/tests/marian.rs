//! The Marian (opus-mt) path end to end on small models this test writes in the real formats:
//! a Hugging Face `config.json`, `model.safetensors` with Hugging Face tensor names, and the
//! tokenizer as opus-mt ships it (`source.spm`/`target.spm` SentencePiece models and
//! `vocab.json`) or as a `tokenizer.json`. The weights are random (or biased towards one token),
//! so the checks are about loading, ids and determinism, not translation quality.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use moqcast_sidecar::marian::sentencepiece::{write_model, Piece, PieceKind, SpmModel};
use moqcast_sidecar::marian::{MarianError, MarianTranslator};

/// Marian ids: end of sentence 0, unknown 1, pad (also the decoder's start) last.
const VOCAB: &[&str] = &[
    "</s>", "<unk>", "▁hello", "▁world", "▁hola", "▁mundo", "▁", "h", "e", "l", "o", ">>es<<",
    "<pad>",
];
const PAD: u32 = 12;
const D: usize = 16;
const FFN: usize = 32;
const LAYERS: usize = 2;
const POSITIONS: usize = 64;

fn id(piece: &str) -> u32 {
    VOCAB.iter().position(|p| *p == piece).unwrap() as u32
}

fn score(piece: &str) -> f32 {
    match piece {
        "▁hello" | "▁hola" | "▁mundo" => -2.0,
        "▁world" => -2.5,
        "▁" => -3.0,
        _ => -5.0,
    }
}

/// A SentencePiece model over `words` in its own order (its ids are not Marian's).
fn spm(words: &[&str]) -> Vec<u8> {
    let piece = |s: &str, kind| Piece {
        piece: s.into(),
        score: if kind == PieceKind::Normal {
            score(s)
        } else {
            0.0
        },
        kind,
    };
    let mut pieces = vec![
        piece("<unk>", PieceKind::Unknown),
        piece("<s>", PieceKind::Control),
        piece("</s>", PieceKind::Control),
    ];
    pieces.extend(words.iter().map(|w| piece(w, PieceKind::Normal)));
    write_model(&SpmModel {
        pieces,
        model_type: 1,
        unk_id: 0,
        byte_fallback: false,
        precompiled_charsmap: vec![],
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
    })
}

fn config(overrides: &[(&str, serde_json::Value)]) -> serde_json::Value {
    // The fields transformers 4.x writes for a MarianMTModel.
    let mut c = serde_json::json!({
        "_name_or_path": "moqcast-test/opus-mt-tiny",
        "activation_dropout": 0.0,
        "activation_function": "swish",
        "architectures": ["MarianMTModel"],
        "attention_dropout": 0.0,
        "bad_words_ids": [[PAD]],
        "bos_token_id": 0,
        "classifier_dropout": 0.0,
        "d_model": D,
        "decoder_attention_heads": 2,
        "decoder_ffn_dim": FFN,
        "decoder_layerdrop": 0.0,
        "decoder_layers": LAYERS,
        "decoder_start_token_id": PAD,
        "decoder_vocab_size": VOCAB.len(),
        "dropout": 0.1,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": FFN,
        "encoder_layerdrop": 0.0,
        "encoder_layers": LAYERS,
        "eos_token_id": 0,
        "forced_eos_token_id": 0,
        "init_std": 0.02,
        "is_encoder_decoder": true,
        "max_length": 512,
        "max_position_embeddings": POSITIONS,
        "model_type": "marian",
        "normalize_embedding": false,
        "num_beams": 4,
        "num_hidden_layers": LAYERS,
        "pad_token_id": PAD,
        "scale_embedding": true,
        "share_encoder_decoder_embeddings": true,
        "static_position_embeddings": true,
        "transformers_version": "4.40.0",
        "use_cache": true,
        "vocab_size": VOCAB.len()
    });
    for (k, v) in overrides {
        c[*k] = v.clone();
    }
    c
}

/// Uniform values in [-scale, scale) from a fixed sequence.
struct Lcg(u64);

impl Lcg {
    fn tensor(&mut self, shape: &[usize], scale: f32) -> Tensor {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }
}

/// Hugging Face's tensor names for a Marian model; `bias` is `final_logits_bias`.
fn weights(seed: u64, bias: &[f32]) -> HashMap<String, Tensor> {
    let mut rng = Lcg(seed);
    let mut w = HashMap::new();
    let ones = || Tensor::ones(D, candle_core::DType::F32, &Device::Cpu).unwrap();
    let zeros = |n: usize| Tensor::zeros(n, candle_core::DType::F32, &Device::Cpu).unwrap();
    w.insert(
        "final_logits_bias".into(),
        Tensor::from_vec(bias.to_vec(), (1, VOCAB.len()), &Device::Cpu).unwrap(),
    );
    w.insert(
        "model.shared.weight".into(),
        rng.tensor(&[VOCAB.len(), D], 0.5),
    );
    for side in ["encoder", "decoder"] {
        // Static sinusoidal positions are saved too; Marian computes them anyway.
        w.insert(
            format!("model.{side}.embed_positions.weight"),
            rng.tensor(&[POSITIONS, D], 1.0),
        );
        for l in 0..LAYERS {
            let p = format!("model.{side}.layers.{l}");
            let attentions: &[&str] = if side == "encoder" {
                &["self_attn"]
            } else {
                &["self_attn", "encoder_attn"]
            };
            for a in attentions {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    w.insert(format!("{p}.{a}.{proj}.weight"), rng.tensor(&[D, D], 0.3));
                    w.insert(format!("{p}.{a}.{proj}.bias"), rng.tensor(&[D], 0.1));
                }
                w.insert(format!("{p}.{a}_layer_norm.weight"), ones());
                w.insert(format!("{p}.{a}_layer_norm.bias"), zeros(D));
            }
            w.insert(format!("{p}.fc1.weight"), rng.tensor(&[FFN, D], 0.3));
            w.insert(format!("{p}.fc1.bias"), rng.tensor(&[FFN], 0.1));
            w.insert(format!("{p}.fc2.weight"), rng.tensor(&[D, FFN], 0.3));
            w.insert(format!("{p}.fc2.bias"), rng.tensor(&[D], 0.1));
            w.insert(format!("{p}.final_layer_norm.weight"), ones());
            w.insert(format!("{p}.final_layer_norm.bias"), zeros(D));
        }
    }
    w
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moqcast-marian-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// source.spm, target.spm, vocab.json: what Helsinki-NLP's opus-mt directories hold.
    SentencePiece,
    /// tokenizer.json with the model's ids.
    TokenizerJson,
}

/// Writes a model directory: random weights from `seed`, `bias` added to the output logits.
fn write_model_dir(name: &str, layout: Layout, seed: u64, bias: &[f32]) -> PathBuf {
    let dir = tmpdir(name);
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config(&[])).unwrap(),
    )
    .unwrap();
    candle_core::safetensors::save(&weights(seed, bias), dir.join("model.safetensors")).unwrap();
    let vocab: serde_json::Map<String, serde_json::Value> = VOCAB
        .iter()
        .enumerate()
        .map(|(i, p)| (p.to_string(), i.into()))
        .collect();
    match layout {
        Layout::SentencePiece => {
            std::fs::write(
                dir.join("source.spm"),
                spm(&["▁world", "▁hello", "▁", "o", "l", "e", "h"]),
            )
            .unwrap();
            std::fs::write(
                dir.join("target.spm"),
                spm(&["▁mundo", "▁hola", "▁", "o", "l", "a", "h"]),
            )
            .unwrap();
            std::fs::write(dir.join("vocab.json"), serde_json::to_vec(&vocab).unwrap()).unwrap();
            std::fs::write(
                dir.join("tokenizer_config.json"),
                r#"{"source_lang": "en", "target_lang": "es", "model_max_length": 512, "separate_vocabs": false}"#,
            )
            .unwrap();
        }
        Layout::TokenizerJson => {
            let vocab: Vec<serde_json::Value> = VOCAB
                .iter()
                .map(|p| {
                    let s = if p.starts_with('<') || p.starts_with(">>") {
                        0.0
                    } else {
                        score(p)
                    };
                    serde_json::json!([p, s])
                })
                .collect();
            let metaspace = serde_json::json!({
                "type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true
            });
            let tokenizer = serde_json::json!({
                "version": "1.0",
                "truncation": null,
                "padding": null,
                "added_tokens": [],
                "normalizer": null,
                "pre_tokenizer": metaspace,
                "post_processor": null,
                "decoder": metaspace,
                "model": {"type": "Unigram", "unk_id": 1, "vocab": vocab, "byte_fallback": false}
            });
            std::fs::write(
                dir.join("tokenizer.json"),
                serde_json::to_vec(&tokenizer).unwrap(),
            )
            .unwrap();
        }
    }
    dir
}

fn bias_towards(piece: &str, amount: f32) -> Vec<f32> {
    let mut b = vec![0.0; VOCAB.len()];
    b[id(piece) as usize] = amount;
    b
}

#[test]
fn opus_mt_layout_loads_tokenizes_and_translates_deterministically() {
    // Random models mostly repeat one token until the length limit; this one says a word and stops.
    let seed = 2;
    let dir = write_model_dir("spm", Layout::SentencePiece, seed, &[0.0; 13]);
    let mt = MarianTranslator::load(&dir, &Device::Cpu).unwrap();
    // Pieces through vocab.json (SentencePiece's own ids differ), then end of sentence.
    assert_eq!(
        mt.encode_source("hello world").unwrap(),
        [id("▁hello"), id("▁world"), 0]
    );
    assert_eq!(
        mt.encode_source("  hello   hole ").unwrap(),
        [id("▁hello"), id("▁"), id("h"), id("o"), id("l"), id("e"), 0]
    );
    // A piece SentencePiece has but vocab.json lacks would be <unk>; an unknown character is.
    assert_eq!(
        mt.encode_source("hex").unwrap(),
        [id("▁"), id("h"), id("e"), id("<unk>"), 0]
    );
    assert_eq!(mt.language_tokens(), [">>es<<"]);
    assert_eq!(
        mt.encode_source(">>es<< hello").unwrap(),
        [id(">>es<<"), id("▁hello"), 0]
    );

    let ids = mt
        .translate_ids(&mt.encode_source("hello world").unwrap())
        .unwrap();
    assert!(ids.len() > 1 && ids.len() <= mt.max_tokens(3), "{ids:?}");
    assert_eq!(ids.last(), Some(&0), "ends with end of sentence: {ids:?}");
    assert!(
        ids.iter().all(|&i| i != PAD && (i as usize) < VOCAB.len()),
        "{ids:?}"
    );
    let text = mt.translate("hello world").unwrap();
    eprintln!("random model: {ids:?} -> {text:?}");
    assert_eq!(text, mt.decode_target(&ids));
    assert!(!text.is_empty());
    // Special and language tokens never reach the text.
    assert_eq!(
        mt.decode_target(&[id(">>es<<"), id("▁hola"), id("<unk>"), id("▁mundo"), PAD, 0]),
        "hola mundo"
    );
    assert_eq!(mt.translate("hello world").unwrap(), text, "deterministic");
    assert_eq!(mt.translate("   ").unwrap(), "");

    // The same model with a tokenizer.json of the model's ids reads and writes the same.
    let json_dir = write_model_dir("json", Layout::TokenizerJson, seed, &[0.0; 13]);
    let mt_json = MarianTranslator::load(&json_dir, &Device::Cpu).unwrap();
    for text in ["hello world", "hello hole", "world"] {
        assert_eq!(
            mt_json.encode_source(text).unwrap(),
            mt.encode_source(text).unwrap(),
            "{text}"
        );
        assert_eq!(
            mt_json.translate(text).unwrap(),
            mt.translate(text).unwrap(),
            "{text}"
        );
    }
    // Several threads share one translator.
    let mt = std::sync::Arc::new(mt);
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let mt = mt.clone();
            std::thread::spawn(move || mt.translate("hello world").unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), text);
    }
    std::fs::remove_dir_all(&dir).ok();
    std::fs::remove_dir_all(&json_dir).ok();
}

#[test]
fn output_follows_the_logits_through_to_text() {
    // Strongly biased towards one word: that word until the length limit.
    let dir = write_model_dir(
        "hola",
        Layout::SentencePiece,
        11,
        &bias_towards("▁hola", 100.0),
    );
    let mut mt = MarianTranslator::load(&dir, &Device::Cpu).unwrap();
    let n = mt.max_tokens(3);
    assert_eq!(n, 2 * 3 + 16);
    assert_eq!(
        mt.translate("hello world").unwrap(),
        vec!["hola"; n].join(" ")
    );
    mt.set_max_tokens(Some(3));
    assert_eq!(mt.translate("hello world").unwrap(), "hola hola hola");

    // The pad token (the decoder's start) is never produced, even when it is the likeliest.
    let mut bias = bias_towards("<pad>", 200.0);
    bias[id("▁mundo") as usize] = 100.0;
    let dir2 = write_model_dir("pad", Layout::SentencePiece, 11, &bias);
    let mut mt = MarianTranslator::load(&dir2, &Device::Cpu).unwrap();
    mt.set_max_tokens(Some(2));
    assert_eq!(mt.translate("hello").unwrap(), "mundo mundo");

    // End of sentence first: an empty translation.
    let dir3 = write_model_dir(
        "eos",
        Layout::SentencePiece,
        11,
        &bias_towards("</s>", 100.0),
    );
    let mt = MarianTranslator::load(&dir3, &Device::Cpu).unwrap();
    assert_eq!(mt.translate_ids(&[id("▁hello"), 0]).unwrap(), [0]);
    assert_eq!(mt.translate("hello").unwrap(), "");
    for d in [dir, dir2, dir3] {
        std::fs::remove_dir_all(d).ok();
    }
}

fn load_err(dir: &Path) -> MarianError {
    match MarianTranslator::load(dir, &Device::Cpu) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e,
    }
}

#[test]
fn missing_or_broken_parts_are_named() {
    let dir = write_model_dir("broken", Layout::SentencePiece, 3, &[0.0; 13]);

    let vocab = std::fs::read(dir.join("vocab.json")).unwrap();
    std::fs::remove_file(dir.join("vocab.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.to_string().contains("vocab.json"), "{err}");
    std::fs::write(dir.join("vocab.json"), &vocab).unwrap();

    let spm = std::fs::read(dir.join("source.spm")).unwrap();
    std::fs::write(dir.join("source.spm"), &spm[..spm.len() - 3]).unwrap();
    let err = load_err(&dir);
    assert!(
        matches!(err, MarianError::SentencePiece { .. }) && err.to_string().contains("truncated"),
        "{err}"
    );
    std::fs::remove_file(dir.join("source.spm")).unwrap();
    let err = load_err(&dir);
    assert!(
        err.to_string()
            .contains("source.spm + vocab.json or tokenizer.json"),
        "{err}"
    );
    std::fs::write(dir.join("source.spm"), &spm).unwrap();

    let model = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let err = load_err(&dir);
    assert!(err.to_string().contains("safetensors"), "{err}");
    // Weights of another shape than the config says.
    let mut w = weights(3, &[0.0; 13]);
    w.insert(
        "model.shared.weight".into(),
        Lcg(1).tensor(&[VOCAB.len(), D + 2], 0.1),
    );
    candle_core::safetensors::save(&w, dir.join("model.safetensors")).unwrap();
    assert!(matches!(load_err(&dir), MarianError::Weights(_)));
    std::fs::write(dir.join("model.safetensors"), &model).unwrap();

    let null = serde_json::Value::Null;
    for (overrides, says) in [
        (vec![("normalize_before", true.into())], "pre-norm"),
        (vec![("model_type", "t5".into())], "not a Marian model"),
        (
            vec![
                ("vocab_size", 5.into()),
                ("decoder_vocab_size", null.clone()),
            ],
            "past the model's vocabulary",
        ),
        (
            vec![("decoder_vocab_size", 20.into())],
            "separate source and target",
        ),
    ] {
        std::fs::write(
            dir.join("config.json"),
            serde_json::to_vec(&config(&overrides)).unwrap(),
        )
        .unwrap();
        let err = load_err(&dir);
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec(&config(&[])).unwrap(),
    )
    .unwrap();
    assert!(MarianTranslator::load(&dir, &Device::Cpu).is_ok());
    std::fs::remove_dir_all(&dir).ok();
}
