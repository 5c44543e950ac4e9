//! Language names for caption labels and engine codes, from BCP 47 tags.

/// The primary language subtag, lowercase (`es` of `es-MX`).
pub fn primary(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .to_ascii_lowercase()
}

/// (ISO 639-1, ISO 639-3, English name, own name, "machine translation" in the language)
const LANGUAGES: &[(&str, &str, &str, &str, &str)] = &[
    ("en", "eng", "English", "English", "machine translation"),
    ("es", "spa", "Spanish", "Español", "traducción automática"),
    ("fr", "fra", "French", "Français", "traduction automatique"),
    ("de", "deu", "German", "Deutsch", "maschinelle Übersetzung"),
    (
        "pt",
        "por",
        "Portuguese",
        "Português",
        "tradução automática",
    ),
    ("it", "ita", "Italian", "Italiano", "traduzione automatica"),
    ("ca", "cat", "Catalan", "Català", "traducció automàtica"),
    ("gl", "glg", "Galician", "Galego", "tradución automática"),
    ("nl", "nld", "Dutch", "Nederlands", "machinevertaling"),
    ("ja", "jpn", "Japanese", "日本語", "機械翻訳"),
    ("zh", "zho", "Chinese", "中文", "机器翻译"),
    ("ru", "rus", "Russian", "Русский", "машинный перевод"),
];

fn find(
    tag: &str,
) -> Option<&'static (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
)> {
    let p = primary(tag);
    LANGUAGES.iter().find(|l| l.0 == p || l.1 == p)
}

/// The language's name in English (`Spanish`), or the tag when unknown.
pub fn english_name(tag: &str) -> String {
    find(tag).map_or_else(|| tag.to_string(), |l| l.2.to_string())
}

/// The language's own name (`Español`), or the tag when unknown.
pub fn own_name(tag: &str) -> String {
    find(tag).map_or_else(|| tag.to_string(), |l| l.3.to_string())
}

/// ISO 639-3 code (`spa`), as Apertium's pair names use.
pub fn iso639_3(tag: &str) -> Option<&'static str> {
    find(tag).map(|l| l.1)
}

/// A language code from an engine's answer, which may be a code (`es`) or an English name
/// (`spanish`, as OpenAI's transcription API says).
pub fn from_name(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    LANGUAGES
        .iter()
        .find(|l| l.2.to_lowercase() == lower)
        .map_or_else(|| primary(&lower), |l| l.0.to_string())
}

/// The label of the caption track recognised from speech: `English (automatic)`.
pub fn recognised_label(tag: &str) -> String {
    format!("{} (automatic)", english_name(tag))
}

/// The label of a machine-translated caption track, in its own language:
/// `Español (traducción automática)`.
pub fn translated_label(tag: &str) -> String {
    match find(tag) {
        Some(l) => format!("{} ({})", l.3, l.4),
        None => format!("{tag} (machine translation)"),
    }
}

/// The label of a dubbed audio track: `Spanish (dubbed)`.
pub fn dubbed_label(tag: &str) -> String {
    format!("{} (dubbed)", english_name(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_codes() {
        assert_eq!(translated_label("es"), "Español (traducción automática)");
        assert_eq!(
            translated_label("fr-CA"),
            "Français (traduction automatique)"
        );
        assert_eq!(translated_label("xx"), "xx (machine translation)");
        assert_eq!(recognised_label("en-US"), "English (automatic)");
        assert_eq!(iso639_3("es"), Some("spa"));
        assert_eq!(iso639_3("eng"), Some("eng"));
        assert_eq!(own_name("ja"), "日本語");
        assert_eq!(primary("pt_BR"), "pt");
        assert_eq!(from_name("Spanish"), "es");
        assert_eq!(from_name("es"), "es");
        assert_eq!(dubbed_label("es-MX"), "Spanish (dubbed)");
    }
}
