//! Reads a relay's Prometheus text metrics (`--relay-metrics http://HOST:PORT/metrics`), for the
//! relay's own view of a run: cached bytes, evictions, dropped groups. Plain HTTP/1.1 over TCP,
//! bounded by a timeout; relays without such an endpoint simply leave these figures out.

use std::{collections::BTreeMap, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use url::Url;

/// Metric name to value, for unlabelled samples.
pub type Samples = BTreeMap<String, f64>;

/// Parses the unlabelled samples of a Prometheus text exposition.
pub fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (name, value) = (f.next()?, f.next()?);
            if name.contains('{') {
                return None;
            }
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// GETs `url` (http only) and parses it; `None` on any failure or after 2 s.
pub async fn scrape(url: &Url) -> Option<Samples> {
    let fetch = async {
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        let mut s = TcpStream::connect((host.trim_matches(['[', ']']), port))
            .await
            .ok()?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            url.path()
        );
        s.write_all(request.as_bytes()).await.ok()?;
        let mut body = Vec::new();
        s.read_to_end(&mut body).await.ok()?;
        let text = String::from_utf8_lossy(&body);
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200").then(|| parse(body))
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unlabelled_samples() {
        let text = "# HELP moqcast_cache_bytes Payload\n# TYPE moqcast_cache_bytes gauge\nmoqcast_cache_bytes 1234\nother{a=\"b\"} 5\nmoqcast_sessions 2\nbroken\n";
        let s = parse(text);
        assert_eq!(s.get("moqcast_cache_bytes"), Some(&1234.0));
        assert_eq!(s.get("moqcast_sessions"), Some(&2.0));
        assert_eq!(s.len(), 2);
    }
}
