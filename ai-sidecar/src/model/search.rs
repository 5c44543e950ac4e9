//! Token search over decoder logits: greedy, beam search (OpenAI's: length-normalised log
//! probability, patience) and temperature sampling, with token suppression and a repetition guard.
//!
//! The search only sees logits through [`Step`], so it is tested here without a model.

/// One decoder step for a batch of hypotheses.
pub(crate) trait Step {
    /// Continue hypothesis `parents[i]` of the previous batch with `tokens[i]`, for every `i`
    /// (parents may repeat or be dropped), and return the next-token logits of each new row.
    fn step(
        &mut self,
        parents: &[u32],
        tokens: &[u32],
    ) -> Result<Vec<Vec<f32>>, candle_core::Error>;
}

/// Tokens masked out of the logits.
#[derive(Debug, Clone)]
pub(crate) struct Suppress {
    /// At every position: special tokens other than end of text, and the model's configured list.
    pub always: Vec<u32>,
    /// Additionally at the first sampled position (a blank and end of text: an empty transcript
    /// must come from `no_speech_prob`, not from an immediate end of text).
    pub begin: Vec<u32>,
}

impl Suppress {
    fn apply(&self, logits: &mut [f32], first: bool) {
        let begin: &[u32] = if first { &self.begin } else { &[] };
        for &t in self.always.iter().chain(begin) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
    }
}

/// Search settings.
#[derive(Debug, Clone)]
pub(crate) struct Search {
    pub eot: u32,
    pub suppress: Suppress,
    /// Most tokens to generate (end of text not counted).
    pub max_tokens: usize,
    pub repetition_guard: bool,
}

/// A hypothesis, finished or not.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Outcome {
    /// Text tokens, without end of text.
    pub tokens: Vec<u32>,
    /// Each token's log probability.
    pub logprobs: Vec<f32>,
    /// The end of text's log probability, where the hypothesis ended with one.
    pub end_logprob: f32,
    /// Whether the repetition guard cut the hypothesis.
    pub repetition: bool,
}

impl Outcome {
    /// Sum of the tokens' log probabilities (and the end of text's, if reached).
    pub fn sum_logprob(&self) -> f64 {
        self.logprobs.iter().map(|&l| l as f64).sum::<f64>() + self.end_logprob as f64
    }

    /// Mean log probability per token, counting the end of text as OpenAI's Whisper does.
    pub fn avg_logprob(&self) -> f64 {
        self.sum_logprob() / (self.tokens.len() + 1) as f64
    }

    /// Ranking score: log probability normalised by length.
    fn score(&self) -> f64 {
        self.sum_logprob() / self.tokens.len().max(1) as f64
    }

    fn push(&mut self, token: u32, logprob: f32) {
        self.tokens.push(token);
        self.logprobs.push(logprob);
    }
}

/// `log_softmax` in place.
pub(crate) fn log_softmax(v: &mut [f32]) {
    let max = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return;
    }
    let sum: f32 = v.iter().map(|&x| (x - max).exp()).sum();
    let log_z = max + sum.ln();
    for x in v.iter_mut() {
        *x -= log_z;
    }
}

/// Softmax probability of `token` under raw `logits`.
pub(crate) fn probability(logits: &[f32], token: u32) -> f32 {
    match logits.get(token as usize) {
        Some(&l) => (l - super::kernels::log_sum_exp(logits)).exp(),
        None => 0.0,
    }
}

pub(crate) fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// Indices of the `k` largest values, largest first.
fn top_k(v: &[f32], k: usize) -> Vec<usize> {
    let mut top: Vec<usize> = Vec::with_capacity(k + 1);
    for (i, &x) in v.iter().enumerate() {
        if x == f32::NEG_INFINITY || (top.len() == k && x <= v[top[k - 1]]) {
            continue;
        }
        let at = top.partition_point(|&j| v[j] >= x);
        top.insert(at, i);
        top.truncate(k);
    }
    top
}

/// Repeats of a `p`-token run (`p < PHRASE`) that count as a loop: 8 identical tokens, 4 repeats
/// of a pair, 3 of anything longer.
fn loop_repeats(p: usize) -> usize {
    3.max(8usize.div_ceil(p))
}

/// A run this long that was already said counts as a repeat, wherever it was said.
const PHRASE: usize = 8;

/// If `tokens` end in a loop, the length that keeps a single copy of the repeated part: the tail
/// is one short run repeated (see [`loop_repeats`]), or its last [`PHRASE`] tokens already
/// occurred (a sentence said again, with or without its punctuation). Looping is how Whisper
/// fails on silence, music and cut-off words, and when it does not see the end of the audio;
/// genuine speech rarely repeats itself like that.
pub(crate) fn repeated_tail(tokens: &[u32]) -> Option<usize> {
    let n = tokens.len();
    for p in 1..PHRASE.min(n / 3 + 1) {
        let need = loop_repeats(p);
        if need * p > n {
            continue;
        }
        let tail = &tokens[n - p..];
        let mut reps = 1;
        while reps < need && tokens[n - (reps + 1) * p..n - reps * p] == *tail {
            reps += 1;
        }
        if reps >= need {
            // Count any further repeats so that all of them are cut.
            while (reps + 1) * p <= n && tokens[n - (reps + 1) * p..n - reps * p] == *tail {
                reps += 1;
            }
            return Some(n - (reps - 1) * p);
        }
    }
    if n > PHRASE {
        let tail = &tokens[n - PHRASE..];
        if tokens[..n - 1]
            .windows(PHRASE)
            .take(n - PHRASE)
            .any(|w| w == tail)
        {
            return Some(n - PHRASE);
        }
    }
    None
}

/// Distinct tokens over tokens: low when the text loops (normal speech stays above 0.5 at the
/// lengths Whisper produces for 30 s).
pub(crate) fn diversity(tokens: &[u32]) -> f32 {
    if tokens.is_empty() {
        return 1.0;
    }
    let mut sorted = tokens.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sorted.len() as f32 / tokens.len() as f32
}

/// Whether a transcript looks like a hallucinated loop.
pub(crate) fn looks_repetitive(o: &Outcome) -> bool {
    o.repetition || (o.tokens.len() >= 24 && diversity(&o.tokens) < 0.3)
}

/// A small deterministic generator for temperature sampling (xorshift64*).
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Search {
    /// Cut a loop off the end of `o` (see [`repeated_tail`]); whether there was one.
    fn guard(&self, o: &mut Outcome) -> bool {
        if !self.repetition_guard {
            return false;
        }
        match repeated_tail(&o.tokens) {
            Some(keep) => {
                o.tokens.truncate(keep);
                o.logprobs.truncate(keep);
                o.repetition = true;
                true
            }
            None => false,
        }
    }

    /// Greedy search (`temperature` 0) or sampling from `softmax(logits / temperature)`.
    pub(crate) fn sample(
        &self,
        step: &mut dyn Step,
        first: Vec<f32>,
        temperature: f32,
        rng: &mut Rng,
    ) -> Result<Outcome, candle_core::Error> {
        let mut out = Outcome::default();
        let mut logits = first;
        loop {
            self.suppress.apply(&mut logits, out.tokens.is_empty());
            let log_z = super::kernels::log_sum_exp(&logits);
            let next = if temperature > 0.0 {
                let mut p: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
                log_softmax(&mut p);
                let mut u = rng.next_f64();
                let mut pick = argmax(&p);
                for (i, &lp) in p.iter().enumerate() {
                    u -= (lp as f64).exp();
                    if u < 0.0 {
                        pick = i;
                        break;
                    }
                }
                pick
            } else {
                argmax(&logits)
            };
            let logprob = logits[next] - log_z;
            if next as u32 == self.eot {
                out.end_logprob = logprob;
                break;
            }
            out.push(next as u32, logprob);
            if self.guard(&mut out) {
                break;
            }
            if out.tokens.len() >= self.max_tokens {
                break;
            }
            logits = step.step(&[0], &[next as u32])?.swap_remove(0);
        }
        Ok(out)
    }

    /// Beam search as in OpenAI's Whisper: each live hypothesis proposes its `beam + 1` best
    /// continuations, the best `beam` that do not end become the next live set, those that end
    /// are kept until `round(beam * patience)` have finished; the winner has the best log
    /// probability per token. A continuation caught by the repetition guard ends there, cut back
    /// to before the loop (dropping it instead would leave the beam to the loops the guard does
    /// not recognise: the same sentence again with a word changed).
    pub(crate) fn beam(
        &self,
        step: &mut dyn Step,
        first: Vec<f32>,
        beam: usize,
        patience: f32,
    ) -> Result<Outcome, candle_core::Error> {
        let beam = beam.max(1);
        let max_finished = ((beam as f32 * patience).round() as usize).max(1);
        let mut live = vec![Outcome::default()];
        let mut rows = vec![first];
        let mut finished: Vec<Outcome> = vec![];
        loop {
            let mut cands: Vec<(f64, usize, u32, f32)> =
                Vec::with_capacity(live.len() * (beam + 1));
            for (r, (hyp, logits)) in live.iter().zip(rows.iter_mut()).enumerate() {
                self.suppress.apply(logits, hyp.tokens.is_empty());
                let log_z = super::kernels::log_sum_exp(logits);
                let sum = hyp.sum_logprob();
                for t in top_k(logits, beam + 1) {
                    let lp = logits[t] - log_z;
                    cands.push((sum + lp as f64, r, t as u32, lp));
                }
            }
            cands.sort_by(|a, b| b.0.total_cmp(&a.0));
            let mut next: Vec<Outcome> = Vec::with_capacity(beam);
            let mut parents: Vec<u32> = Vec::with_capacity(beam);
            let mut ended: Vec<Outcome> = vec![];
            for (_, r, t, lp) in cands {
                let mut hyp = live[r].clone();
                if t == self.eot {
                    hyp.end_logprob = lp;
                    ended.push(hyp);
                    continue;
                }
                hyp.push(t, lp);
                if self.guard(&mut hyp) {
                    ended.push(hyp);
                    continue;
                }
                next.push(hyp);
                parents.push(r as u32);
                // Endings ranked below the last live hypothesis are not kept.
                if next.len() == beam {
                    break;
                }
            }
            for e in ended {
                if finished.len() < max_finished {
                    finished.push(e);
                }
            }
            let at_limit = next
                .first()
                .is_some_and(|h| h.tokens.len() >= self.max_tokens);
            if finished.len() >= max_finished || next.is_empty() || at_limit {
                if finished.len() < max_finished {
                    finished.extend(next);
                }
                break;
            }
            let last: Vec<u32> = next.iter().map(|h| *h.tokens.last().unwrap()).collect();
            rows = step.step(&parents, &last)?;
            live = next;
        }
        Ok(finished
            .into_iter()
            .max_by(|a, b| a.score().total_cmp(&b.score()))
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_tail_keeps_one_copy() {
        // A 3-gram three times.
        let t = [5, 1, 2, 3, 1, 2, 3, 1, 2, 3];
        assert_eq!(repeated_tail(&t), Some(4));
        // Twice is allowed.
        assert_eq!(repeated_tail(&[5, 1, 2, 3, 1, 2, 3]), None);
        // One token: 8 in a row, not 7.
        assert_eq!(repeated_tail(&[9; 7]), None);
        assert_eq!(repeated_tail(&[4, 9, 9, 9, 9, 9, 9, 9, 9, 9]), Some(2));
        // A pair four times.
        assert_eq!(repeated_tail(&[7, 1, 2, 1, 2, 1, 2]), None);
        assert_eq!(repeated_tail(&[7, 1, 2, 1, 2, 1, 2, 1, 2]), Some(3));
        // All copies are cut, even beyond the threshold.
        let mut t = vec![42];
        for _ in 0..6 {
            t.extend([10, 11, 12, 13]);
        }
        assert_eq!(repeated_tail(&t), Some(5));
        // A sentence said again: cut as soon as eight of its tokens repeat, even after a full
        // stop and from its middle; seven repeated tokens are fine.
        let sentence: Vec<u32> = (100..118).collect();
        let t = [&[1, 2][..], &sentence, &[13], &sentence[..8]].concat();
        assert_eq!(repeated_tail(&t), Some(21));
        let t = [&sentence[..], &[13], &sentence[4..12]].concat();
        assert_eq!(repeated_tail(&t), Some(19));
        let t = [&[1, 2][..], &sentence[..7], &[13], &sentence[..7]].concat();
        assert_eq!(repeated_tail(&t), None);
        assert_eq!(repeated_tail(&[]), None);
        assert_eq!(repeated_tail(&[1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
    }

    #[test]
    fn diversity_flags_loops() {
        let loop_: Vec<u32> = (0..30).map(|i| i % 4).collect();
        assert!(diversity(&loop_) < 0.3);
        let o = Outcome {
            tokens: loop_,
            ..Default::default()
        };
        assert!(looks_repetitive(&o));
        let text: Vec<u32> = (0..30).collect();
        assert_eq!(diversity(&text), 1.0);
        assert_eq!(diversity(&[]), 1.0);
    }

    #[test]
    fn top_k_and_log_softmax() {
        let v = [0.1, 3.0, f32::NEG_INFINITY, 2.0, 3.0];
        assert_eq!(top_k(&v, 3), vec![1, 4, 3]);
        assert_eq!(top_k(&v, 10), vec![1, 4, 3, 0]);
        let mut l = vec![1.0f32, 2.0, 3.0];
        log_softmax(&mut l);
        let s: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-6);
        assert!((probability(&[1.0, 2.0, 3.0], 2) - l[2].exp()).abs() < 1e-6);
    }

    /// A toy model over a 5-token vocabulary (end of text is 0) whose logits depend only on the
    /// last token, from a table.
    struct Table {
        rows: Vec<u32>,
        table: Vec<Vec<f32>>,
        calls: usize,
    }

    impl Step for Table {
        fn step(
            &mut self,
            parents: &[u32],
            tokens: &[u32],
        ) -> Result<Vec<Vec<f32>>, candle_core::Error> {
            assert!(parents
                .iter()
                .all(|&p| (p as usize) < self.rows.len().max(1)));
            self.rows = tokens.to_vec();
            self.calls += 1;
            Ok(tokens
                .iter()
                .map(|&t| self.table[t as usize].clone())
                .collect())
        }
    }

    fn search() -> Search {
        Search {
            eot: 0,
            suppress: Suppress {
                always: vec![],
                begin: vec![0],
            },
            max_tokens: 20,
            repetition_guard: true,
        }
    }

    fn ln(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn beam_finds_what_greedy_misses() {
        // First step: token 1 (0.5) or 2 (0.45). After 1 the model is unsure (3 or 4 at 0.35 each,
        // then it ends), after 2 it is sure (end of text 0.95): per token, "2" wins.
        let table = vec![
            ln(&[0.2; 5]),
            ln(&[0.3, 0.0001, 0.0001, 0.35, 0.35]),
            ln(&[0.95, 0.0001, 0.0001, 0.025, 0.025]),
            ln(&[0.99, 0.0025, 0.0025, 0.0025, 0.0025]),
            ln(&[0.99, 0.0025, 0.0025, 0.0025, 0.0025]),
        ];
        let first = ln(&[0.025, 0.5, 0.45, 0.0125, 0.0125]);
        let s = search();
        let mut m = Table {
            rows: vec![0],
            table: table.clone(),
            calls: 0,
        };
        let g = s
            .sample(&mut m, first.clone(), 0.0, &mut Rng::new(1))
            .unwrap();
        assert_eq!(g.tokens, vec![1, 3]);
        let mut m = Table {
            rows: vec![0],
            table,
            calls: 0,
        };
        let b = s.beam(&mut m, first, 3, 1.0).unwrap();
        assert_eq!(b.tokens, vec![2]);
        // End of text is suppressed at the first step, so that row is renormalised (and the
        // table rows do not sum to exactly 1 either).
        let want = (0.45f64 / 0.975).ln() + (0.95f64 / 1.0002).ln();
        assert!((b.sum_logprob() - want).abs() < 1e-5, "{}", b.sum_logprob());
        assert!((b.avg_logprob() - b.sum_logprob() / 2.0).abs() < 1e-12);
    }

    #[test]
    fn guard_stops_a_loop() {
        // 1 -> 2 -> 3 -> 1 ... forever, end of text never likely.
        let mut table = vec![ln(&[0.2; 5]); 5];
        table[1] = ln(&[0.01, 0.01, 0.96, 0.01, 0.01]);
        table[2] = ln(&[0.01, 0.01, 0.01, 0.96, 0.01]);
        table[3] = ln(&[0.01, 0.96, 0.01, 0.01, 0.01]);
        let first = ln(&[0.01, 0.96, 0.01, 0.01, 0.01]);
        let s = search();
        let mut m = Table {
            rows: vec![0],
            table: table.clone(),
            calls: 0,
        };
        let g = s
            .sample(&mut m, first.clone(), 0.0, &mut Rng::new(1))
            .unwrap();
        assert_eq!(g.tokens, vec![1, 2, 3]);
        assert!(g.repetition);
        assert!(m.calls < 12);
        let mut m = Table {
            rows: vec![0],
            table,
            calls: 0,
        };
        let b = s.beam(&mut m, first.clone(), 2, 1.0).unwrap();
        assert!(b.tokens.len() <= 6, "{:?}", b.tokens);
        // Without the guard the search runs to the length limit.
        let s = Search {
            repetition_guard: false,
            ..search()
        };
        let mut m = Table {
            rows: vec![0],
            table: vec![ln(&[0.01, 0.96, 0.01, 0.01, 0.01]); 5],
            calls: 0,
        };
        let g = s.sample(&mut m, first, 0.0, &mut Rng::new(1)).unwrap();
        assert_eq!(g.tokens.len(), 20);
        assert!(!g.repetition);
    }

    #[test]
    fn sampling_is_seeded_and_first_step_suppression_holds() {
        let table = vec![ln(&[0.3, 0.2, 0.2, 0.2, 0.1]); 5];
        let first = ln(&[0.9, 0.025, 0.025, 0.025, 0.025]);
        let s = search();
        let run = |seed| {
            let mut m = Table {
                rows: vec![0],
                table: table.clone(),
                calls: 0,
            };
            s.sample(&mut m, first.clone(), 1.0, &mut Rng::new(seed))
                .unwrap()
        };
        let a = run(7);
        assert_eq!(a, run(7));
        // End of text is suppressed at the first position, so something is always said.
        assert!(!a.tokens.is_empty());
    }
}
