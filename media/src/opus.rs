//! Opus packets (RFC 6716): how long a packet plays, read from its TOC byte.

/// Samples at 48 kHz that one Opus frame of each TOC configuration (RFC 6716 §3.1) lasts:
/// SILK 10/20/40/60 ms, Hybrid 10/20 ms, CELT 2.5/5/10/20 ms.
fn frame_samples(config: u8) -> u32 {
    match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    }
}

/// Most audio one packet may hold (RFC 6716 §3.2.5): 120 ms at 48 kHz.
pub const MAX_PACKET_SAMPLES: u32 = 5760;

/// Samples at 48 kHz that `packet` decodes to, or `None` when its TOC is broken: an empty
/// packet, a code 3 packet without its frame count, a count of 0, or more than 120 ms.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(packet.get(1)? & 0x3f),
    };
    let samples = frames * frame_samples(toc >> 3);
    (frames > 0 && samples <= MAX_PACKET_SAMPLES).then_some(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_the_toc() {
        // config 1 (SILK NB 20 ms), one frame.
        assert_eq!(packet_samples(&[1 << 3]), Some(960));
        // config 31 (CELT FB 20 ms), two frames (code 1 and code 2).
        assert_eq!(packet_samples(&[(31 << 3) | 1]), Some(1920));
        assert_eq!(packet_samples(&[(31 << 3) | 2, 0]), Some(1920));
        // config 16 (CELT NB 2.5 ms), code 3 with 48 frames: the 120 ms maximum.
        assert_eq!(packet_samples(&[(16 << 3) | 3, 48]), Some(5760));
        // config 13 (Hybrid SWB 20 ms), code 3 with 3 frames (flags in the count byte).
        assert_eq!(packet_samples(&[(13 << 3) | 3, 0xc3]), Some(2880));
    }

    #[test]
    fn broken_tocs_are_refused() {
        assert_eq!(packet_samples(&[]), None);
        assert_eq!(packet_samples(&[(31 << 3) | 3]), None);
        assert_eq!(packet_samples(&[(31 << 3) | 3, 0]), None);
        // 7 frames of 20 ms: past 120 ms.
        assert_eq!(packet_samples(&[(31 << 3) | 3, 7]), None);
    }
}
