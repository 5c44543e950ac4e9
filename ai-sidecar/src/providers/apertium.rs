//! Apertium, rule-based machine translation (Debian `apertium` + a pair such as
//! `apertium-eng-spa`), run as a program: its GPL-2 code is never linked.
//!
//! `apertium -u eng-spa` costs about 0.3-0.6 s a call, nearly all of it starting the pipeline's
//! ten programs and loading their dictionaries. So each language pair runs one long-lived
//! pipeline in null-flush mode instead: the pair's mode file turned into a shell pipeline by
//! `apertium-wblank-mode -z`, in which every program translates up to a NUL byte and flushes.
//! A caption then takes 1-5 ms.
//!
//! What the `apertium` script's plain-text deformatter and reformatter do is done here: the
//! text's special characters are escaped, and it ends with `.[][\n]` (a sentence end the tagger
//! needs before it lets a sentence go, and a superblank); on the way back, superblanks are
//! dropped, escapes undone and the added full stop removed. Without that sentence end the
//! pipeline holds each caption back until the next one arrives, which is why a plain
//! `apertium -z` seemed to hang.
//!
//! A pipeline that fails or is abandoned mid-caption (a chain timeout drops the future) is
//! killed, with its whole process group, and started again on the next call.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::lang;
use crate::stage::{BoxFuture, Provider, ProviderError, TranslateRequest, Translation};

/// Where Debian installs Apertium's data.
pub const DEFAULT_DATADIR: &str = "/usr/share/apertium";

/// One language pair of Apertium, as a provider.
pub struct Apertium {
    name: String,
    /// The pair's mode, for example `eng-spa`.
    mode: String,
    /// The null-flush shell pipeline.
    pipeline: Arc<str>,
    process: Arc<tokio::sync::Mutex<Option<Pipe>>>,
}

/// The Apertium data directory: `datadir` if given, else `$APERTIUM_DATADIR`, else Debian's.
pub fn datadir(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("APERTIUM_DATADIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATADIR))
}

/// The pairs installed in `datadir` (mode names such as `eng-spa`).
pub fn installed_modes(datadir: &Path) -> Vec<String> {
    let mut modes: Vec<String> = std::fs::read_dir(datadir.join("modes"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".mode"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    modes.sort();
    modes
}

impl Apertium {
    /// Prepares the pair `from` -> `to` (BCP 47) from `datadir`; the reason when it cannot serve.
    pub fn new(name: &str, datadir: &Path, from: &str, to: &str) -> Result<Self, String> {
        let modes_dir = datadir.join("modes");
        if !modes_dir.is_dir() {
            return Err(format!(
                "Apertium is not installed ({} is missing): install Debian's apertium and \
                 apertium-eng-spa (scripts/setup.sh does)",
                modes_dir.display()
            ));
        }
        let codes = |tag: &str| {
            let mut c = vec![lang::primary(tag)];
            if let Some(three) = lang::iso639_3(tag) {
                c.insert(0, three.to_string());
            }
            c
        };
        let candidates: Vec<String> = codes(from)
            .iter()
            .flat_map(|f| codes(to).into_iter().map(move |t| format!("{f}-{t}")))
            .collect();
        let Some(mode) = candidates
            .iter()
            .find(|m| modes_dir.join(format!("{m}.mode")).is_file())
            .cloned()
        else {
            let installed = installed_modes(datadir);
            return Err(format!(
                "no Apertium pair for {from}->{to} in {} (installed: {}); Debian packages \
                 pairs as apertium-<pair>, for example apertium-eng-spa",
                modes_dir.display(),
                if installed.is_empty() {
                    "none".to_string()
                } else {
                    installed.join(", ")
                }
            ));
        };
        let out = std::process::Command::new("apertium-wblank-mode")
            .arg("-z")
            .arg(modes_dir.join(format!("{mode}.mode")))
            .output()
            .map_err(|e| {
                format!("cannot run apertium-wblank-mode ({e}): install Debian's apertium")
            })?;
        if !out.status.success() {
            return Err(format!(
                "apertium-wblank-mode failed on {mode}.mode: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let pipeline = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Ok(Self {
            name: name.to_string(),
            mode,
            pipeline: pipeline.into(),
            process: Default::default(),
        })
    }

    /// The pair's mode name, for example `eng-spa`.
    pub fn mode(&self) -> &str {
        &self.mode
    }

    /// Whether the pipeline is running (started by a call or [`Provider::warm`]) and idle.
    pub fn is_running(&self) -> bool {
        self.process.try_lock().is_ok_and(|p| p.is_some())
    }
}

impl Provider<Translation> for Apertium {
    fn name(&self) -> &str {
        &self.name
    }

    fn call(&self, request: TranslateRequest) -> BoxFuture<Result<String, ProviderError>> {
        let process = self.process.clone();
        let pipeline = self.pipeline.clone();
        let mode = self.mode.clone();
        Box::pin(async move {
            let mut slot = process.lock().await;
            let mut pipe = match slot.take() {
                Some(p) => p,
                None => Pipe::spawn(&pipeline, &mode)?,
            };
            // Dropped on an error or when this future is abandoned: the pipeline is killed.
            let text = pipe.translate(&request.text).await?;
            *slot = Some(pipe);
            Ok(text)
        })
    }

    /// Starts the pipeline and translates a word through it: its programs load their
    /// dictionaries (0.3-0.6 s) before the first caption rather than during it.
    fn warm(&self) -> BoxFuture<()> {
        let process = self.process.clone();
        let pipeline = self.pipeline.clone();
        let mode = self.mode.clone();
        Box::pin(async move {
            let mut slot = process.lock().await;
            if slot.is_some() {
                return;
            }
            let started = std::time::Instant::now();
            let warmed = match Pipe::spawn(&pipeline, &mode) {
                Ok(mut pipe) => pipe.translate("Hello").await.map(|_| pipe),
                Err(e) => Err(e),
            };
            match warmed {
                Ok(pipe) => {
                    tracing::debug!(pair = %mode, took = ?started.elapsed(), "Apertium pipeline warmed");
                    *slot = Some(pipe);
                }
                Err(e) => tracing::debug!(pair = %mode, error = %e, "Apertium warm-up failed"),
            }
        })
    }
}

/// A running null-flush pipeline.
struct Pipe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Pipe {
    fn spawn(pipeline: &str, mode: &str) -> Result<Self, ProviderError> {
        // `$1` is the generator's option (`-n`: no marks on unknown words, as `apertium -u`),
        // `$2` the tagger's (none).
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(pipeline)
            .args(["apertium", "-n", ""])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| ProviderError::Failed(format!("cannot start Apertium {mode}: {e}")))?;
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        if let Some(stderr) = child.stderr.take() {
            let mode = mode.to_string();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::debug!(pair = %mode, "apertium: {line}");
                }
            });
        }
        tracing::debug!(pair = %mode, "Apertium pipeline started");
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    async fn translate(&mut self, text: &str) -> Result<String, ProviderError> {
        let mut input = escape(text);
        input.push_str(".[][\n]\0");
        let io = |e: std::io::Error| ProviderError::Failed(format!("Apertium pipeline: {e}"));
        self.stdin.write_all(input.as_bytes()).await.map_err(io)?;
        self.stdin.flush().await.map_err(io)?;
        let mut out = Vec::new();
        let n = self.stdout.read_until(0, &mut out).await.map_err(io)?;
        if n == 0 || out.last() != Some(&0) {
            return Err(ProviderError::Failed(
                "the Apertium pipeline exited".to_string(),
            ));
        }
        out.pop();
        Ok(unformat(&String::from_utf8_lossy(&out)))
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // The pipeline's programs share the process group `bash` leads; kill them all (one stuck
        // mid-caption would otherwise outlive us).
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on a process group we created; no memory is involved.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Escapes the characters Apertium's stream format reserves; a caption is one line.
fn escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '[' | ']' | '{' | '}' | '^' | '$' | '/' | '\\' | '@' | '<' | '>' => {
                s.push('\\');
                s.push(c);
            }
            '\n' | '\r' | '\t' => s.push(' '),
            '\0' => {}
            c => s.push(c),
        }
    }
    s.trim_end().to_string()
}

/// Apertium's output back to plain text: superblanks (`[...]`) dropped, escapes undone, the
/// full stop [`Pipe::translate`] added removed.
fn unformat(out: &str) -> String {
    let mut s = String::with_capacity(out.len());
    let mut chars = out.chars();
    let mut in_blank = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if !in_blank {
                        s.push(n);
                    }
                }
            }
            '[' if !in_blank => in_blank = true,
            ']' if in_blank => in_blank = false,
            _ if in_blank => {}
            c => s.push(c),
        }
    }
    let s = s.trim_end();
    let s = s.strip_suffix('.').unwrap_or(s);
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_unformats() {
        assert_eq!(
            escape("a [b] $5 / c\\d\nnext"),
            "a \\[b\\] \\$5 \\/ c\\\\d next"
        );
        assert_eq!(unformat("Hola Mundo..[][\\n]"), "Hola Mundo.");
        assert_eq!(
            unformat("Ninguna puntuación aquí.[][\\n]"),
            "Ninguna puntuación aquí"
        );
        assert_eq!(
            unformat(" Cuesta 5 dólares, \\[vale\\] \\$.[][\\n]"),
            "Cuesta 5 dólares, [vale] $"
        );
    }

    #[test]
    fn a_missing_pair_says_what_is_installed() {
        let dir = std::env::temp_dir().join(format!("moqcast-apertium-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("modes")).unwrap();
        std::fs::write(dir.join("modes/eng-spa.mode"), "cat").unwrap();
        let e = Apertium::new("apertium", &dir, "en", "fr").err().unwrap();
        assert!(e.contains("no Apertium pair for en->fr"), "{e}");
        assert!(e.contains("installed: eng-spa"), "{e}");
        let e = Apertium::new("apertium", &dir.join("nothing"), "en", "es")
            .err()
            .unwrap();
        assert!(e.contains("Apertium is not installed"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
