//! Spoken languages and tasks of multilingual Whisper models.
//!
//! Whisper names a language with a token `<|xx|>` whose code is, with two exceptions, already a
//! BCP-47 primary language subtag: Javanese is `jw` (BCP-47 `jv`), and a few codes are three
//! letters (`haw`, `yue`), which BCP-47 allows. [`whisper_code`] maps a BCP-47 tag to Whisper's
//! code and [`bcp47`] maps back.

/// What Whisper does with the speech.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Task {
    /// Text in the spoken language (`<|transcribe|>`).
    #[default]
    Transcribe,
    /// English text, whatever the spoken language (`<|translate|>`; multilingual models only).
    Translate,
}

/// The language of the speech.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Language {
    /// Detected from the audio: Whisper's language-token probabilities after
    /// `<|startoftranscript|>`, over the same encoder window as the text.
    Auto,
    /// A BCP-47 tag (`es`, `es-MX`, `pt-BR`): its primary subtag picks Whisper's language token.
    Fixed(String),
}

impl Default for Language {
    /// English.
    fn default() -> Self {
        Language::Fixed("en".into())
    }
}

impl Language {
    /// `Fixed(tag)`.
    pub fn fixed(tag: &str) -> Self {
        Language::Fixed(tag.to_string())
    }

    /// `auto` (any case) is [`Language::Auto`]; anything else a fixed BCP-47 tag.
    pub fn parse(s: &str) -> Self {
        if s.trim().eq_ignore_ascii_case("auto") {
            Language::Auto
        } else {
            Language::Fixed(s.trim().to_string())
        }
    }
}

/// Whisper's languages: token code and English name, in token order (`<|en|>` is the first
/// language token). Whisper large-v3 adds `yue`; older multilingual models stop at `su` (99).
pub const LANGUAGES: &[(&str, &str)] = &[
    ("en", "English"),
    ("zh", "Chinese"),
    ("de", "German"),
    ("es", "Spanish"),
    ("ru", "Russian"),
    ("ko", "Korean"),
    ("fr", "French"),
    ("ja", "Japanese"),
    ("pt", "Portuguese"),
    ("tr", "Turkish"),
    ("pl", "Polish"),
    ("ca", "Catalan"),
    ("nl", "Dutch"),
    ("ar", "Arabic"),
    ("sv", "Swedish"),
    ("it", "Italian"),
    ("id", "Indonesian"),
    ("hi", "Hindi"),
    ("fi", "Finnish"),
    ("vi", "Vietnamese"),
    ("he", "Hebrew"),
    ("uk", "Ukrainian"),
    ("el", "Greek"),
    ("ms", "Malay"),
    ("cs", "Czech"),
    ("ro", "Romanian"),
    ("da", "Danish"),
    ("hu", "Hungarian"),
    ("ta", "Tamil"),
    ("no", "Norwegian"),
    ("th", "Thai"),
    ("ur", "Urdu"),
    ("hr", "Croatian"),
    ("bg", "Bulgarian"),
    ("lt", "Lithuanian"),
    ("la", "Latin"),
    ("mi", "Maori"),
    ("ml", "Malayalam"),
    ("cy", "Welsh"),
    ("sk", "Slovak"),
    ("te", "Telugu"),
    ("fa", "Persian"),
    ("lv", "Latvian"),
    ("bn", "Bengali"),
    ("sr", "Serbian"),
    ("az", "Azerbaijani"),
    ("sl", "Slovenian"),
    ("kn", "Kannada"),
    ("et", "Estonian"),
    ("mk", "Macedonian"),
    ("br", "Breton"),
    ("eu", "Basque"),
    ("is", "Icelandic"),
    ("hy", "Armenian"),
    ("ne", "Nepali"),
    ("mn", "Mongolian"),
    ("bs", "Bosnian"),
    ("kk", "Kazakh"),
    ("sq", "Albanian"),
    ("sw", "Swahili"),
    ("gl", "Galician"),
    ("mr", "Marathi"),
    ("pa", "Punjabi"),
    ("si", "Sinhala"),
    ("km", "Khmer"),
    ("sn", "Shona"),
    ("yo", "Yoruba"),
    ("so", "Somali"),
    ("af", "Afrikaans"),
    ("oc", "Occitan"),
    ("ka", "Georgian"),
    ("be", "Belarusian"),
    ("tg", "Tajik"),
    ("sd", "Sindhi"),
    ("gu", "Gujarati"),
    ("am", "Amharic"),
    ("yi", "Yiddish"),
    ("lo", "Lao"),
    ("uz", "Uzbek"),
    ("fo", "Faroese"),
    ("ht", "Haitian Creole"),
    ("ps", "Pashto"),
    ("tk", "Turkmen"),
    ("nn", "Norwegian Nynorsk"),
    ("mt", "Maltese"),
    ("sa", "Sanskrit"),
    ("lb", "Luxembourgish"),
    ("my", "Burmese"),
    ("bo", "Tibetan"),
    ("tl", "Tagalog"),
    ("mg", "Malagasy"),
    ("as", "Assamese"),
    ("tt", "Tatar"),
    ("haw", "Hawaiian"),
    ("ln", "Lingala"),
    ("ha", "Hausa"),
    ("ba", "Bashkir"),
    ("jw", "Javanese"),
    ("su", "Sundanese"),
    ("yue", "Cantonese"),
];

/// Whisper's code for a BCP-47 tag: its primary subtag, lower-cased, with the aliases Whisper
/// lacks (`jv` -> `jw`, `nb` -> `no`, `fil` -> `tl`, `iw` -> `he`). `None` if Whisper has no
/// such language.
pub fn whisper_code(tag: &str) -> Option<&'static str> {
    let primary = tag
        .trim()
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let code = match primary.as_str() {
        "jv" => "jw",
        "nb" => "no",
        "fil" => "tl",
        "iw" => "he",
        other => other,
    };
    LANGUAGES.iter().map(|(c, _)| *c).find(|c| *c == code)
}

/// The BCP-47 tag of a Whisper language code (`jw` -> `jv`; the others are their own tags).
pub fn bcp47(code: &str) -> &str {
    match code {
        "jw" => "jv",
        other => other,
    }
}

/// English name of a Whisper code or BCP-47 tag, if Whisper knows the language.
pub fn english_name(tag: &str) -> Option<&'static str> {
    let code = whisper_code(tag)?;
    LANGUAGES.iter().find(|(c, _)| *c == code).map(|(_, n)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bcp47_tags_map_to_whisper_codes_and_back() {
        assert_eq!(whisper_code("es"), Some("es"));
        assert_eq!(whisper_code("es-MX"), Some("es"));
        assert_eq!(whisper_code("pt_BR"), Some("pt"));
        assert_eq!(whisper_code("ZH-Hant"), Some("zh"));
        assert_eq!(whisper_code("jv"), Some("jw"));
        assert_eq!(whisper_code("nb"), Some("no"));
        assert_eq!(whisper_code("haw"), Some("haw"));
        assert_eq!(whisper_code("xx"), None);
        assert_eq!(whisper_code(""), None);
        assert_eq!(bcp47("jw"), "jv");
        assert_eq!(bcp47("es"), "es");
        assert_eq!(english_name("es-ES"), Some("Spanish"));
        // Every code is distinct, and each maps to itself except `jw`.
        for (i, (c, _)) in LANGUAGES.iter().enumerate() {
            assert!(LANGUAGES[..i].iter().all(|(d, _)| d != c), "{c} twice");
            assert_eq!(whisper_code(bcp47(c)), Some(*c));
        }
        assert_eq!(LANGUAGES.len(), 100);
    }

    #[test]
    fn language_parses_auto() {
        assert_eq!(Language::parse("auto"), Language::Auto);
        assert_eq!(Language::parse(" AUTO "), Language::Auto);
        assert_eq!(Language::parse("es"), Language::fixed("es"));
        assert_eq!(Language::default(), Language::fixed("en"));
    }
}
