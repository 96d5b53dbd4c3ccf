//! Raw deflate pieces that splice into one stream.
//!
//! A scrape's gzip body is one deflate stream made of pieces compressed at
//! different times: the exporter's own metrics, compressed per scrape, then
//! each producer's cached series. Any piece may come before any other, so
//! every piece ends the way zlib's `Z_SYNC_FLUSH` ends a stream: its last
//! block is not final and an empty stored block aligns it to a byte. The
//! gzip trailer of a scrape starts with [`FINAL_EMPTY_BLOCK`].
//!
//! libdeflate compresses best (its level 12 is about 15% smaller than zlib's
//! level 9 on the exposition), but it always ends its output with a final
//! block and cannot flush. [`piece`] therefore walks libdeflate's output to
//! the final block's header, clears its BFINAL bit and appends the empty
//! stored block: a walk over the blocks' codes, without producing output.

use flate2::{Compress, Compression, FlushCompress, Status as FlateStatus};

/// An empty final block with fixed codes (BFINAL 1, BTYPE 01, end of
/// block): what ends a stream of [`piece`]s.
pub const FINAL_EMPTY_BLOCK: [u8; 2] = [0x03, 0x00];

/// libdeflate's strongest level: near-optimal parsing.
pub const STRONGEST_LEVEL: i32 = 12;
/// Above this much text, [`LARGE_TEXT_LEVEL`]: level 12 costs about 0.18 s
/// per MB here, level 9 about 0.02 s.
pub const STRONGEST_LEVEL_MAX_BYTES: usize = 8 << 20;
pub const LARGE_TEXT_LEVEL: i32 = 9;

/// `text` as a raw deflate piece that splices before any other (see the
/// module comment). Empty text gives an empty piece.
pub fn piece(text: &[u8]) -> Vec<u8> {
    if text.is_empty() {
        return Vec::new();
    }
    let mut out = deflate_once(text);
    match final_block_header(&out) {
        Some((bfinal_bit, end_bit)) => {
            out[bfinal_bit / 8] &= !(1 << (bfinal_bit % 8));
            // An empty stored block: BFINAL 0 and BTYPE 00 (three zero bits)
            // from end_bit, zeros to the byte boundary, LEN 0, NLEN !0.
            let aligned = (end_bit + 3).div_ceil(8);
            out.truncate(end_bit.div_ceil(8));
            if end_bit % 8 != 0
                && let Some(last) = out.last_mut()
            {
                *last &= (1u8 << (end_bit % 8)) - 1;
            }
            out.resize(aligned, 0);
            out.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
            out
        }
        // libdeflate's output always walks; should it ever not, zlib makes
        // the piece itself.
        None => sync_flushed(text, Compression::best()),
    }
}

/// A complete raw deflate stream of `text` from libdeflate (its last block
/// final).
pub fn deflate_once(text: &[u8]) -> Vec<u8> {
    let level = if text.len() <= STRONGEST_LEVEL_MAX_BYTES {
        STRONGEST_LEVEL
    } else {
        LARGE_TEXT_LEVEL
    };
    let level = libdeflater::CompressionLvl::new(level).unwrap_or_default();
    let mut compressor = libdeflater::Compressor::new(level);
    // Zeroed memory is mapped lazily: only the pages written count in RSS.
    let mut out = vec![0u8; compressor.deflate_compress_bound(text.len())];
    match compressor.deflate_compress(text, &mut out) {
        Ok(n) => {
            out.truncate(n);
            out.shrink_to_fit();
            out
        }
        // Cannot happen with the bound above; fall back to zlib, and to
        // stored blocks should zlib fail too.
        Err(_) => {
            let mut out = Vec::new();
            let mut z = Compress::new(Compression::best(), false);
            match deflate_into(&mut z, text, &mut out, FlushCompress::Finish) {
                Ok(()) => out,
                Err(_) => {
                    let mut out = stored(text);
                    out.extend_from_slice(&FINAL_EMPTY_BLOCK);
                    out
                }
            }
        }
    }
}

/// `text` as stored (uncompressed) blocks, none final, ending on a byte
/// boundary: a piece that cannot fail, for when a compressor does.
pub fn stored(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + text.len() / 65_535 * 5 + 5);
    for chunk in text.chunks(65_535) {
        // BFINAL 0, BTYPE 00, padded to the byte: one zero byte.
        out.push(0);
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// `text` compressed by zlib and sync-flushed: a piece, made quickly (for
/// the per-scrape part). Should zlib fail, the piece is `text` stored, not
/// cut short: a failing compressor costs bytes, never series.
pub fn sync_flushed(text: &[u8], level: Compression) -> Vec<u8> {
    // Room for the worst case (stored blocks) in one call.
    let mut out = Vec::with_capacity(text.len() + text.len() / 8 + 1024);
    if !text.is_empty() {
        let mut z = Compress::new(level, false);
        if deflate_into(&mut z, text, &mut out, FlushCompress::Sync).is_err() {
            return stored(text);
        }
    }
    out
}

/// zlib failed part-way: what it wrote is not the whole input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeflateFailed;

/// Feeds all of `input` to `deflate`, then flushes as asked, growing `out`.
/// An error from zlib, or zlib making no progress with input left, is
/// returned: the output is then short of the input, and must not be used.
pub fn deflate_into(
    deflate: &mut Compress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> Result<(), DeflateFailed> {
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(4096));
        }
        let (in_before, out_before) = (deflate.total_in(), deflate.total_out());
        let status = deflate.compress_vec(input, out, flush);
        input = &input[(deflate.total_in() - in_before) as usize..];
        let stalled = deflate.total_in() == in_before && deflate.total_out() == out_before;
        match status {
            Ok(FlateStatus::StreamEnd) if input.is_empty() => return Ok(()),
            Ok(FlateStatus::StreamEnd) | Err(_) => return Err(DeflateFailed),
            // zlib: a flush is complete once it returns with output space
            // left. flate2's default backend (miniz_oxide) can return so
            // with part of the flush still held (found by fuzzing: 31,845
            // bytes at level 0 came out 100 short), so a sync flush is
            // also asked to end the way one ends: an empty stored block.
            Ok(_)
                if !matches!(flush, FlushCompress::Finish)
                    && input.is_empty()
                    && out.len() < out.capacity() =>
            {
                return finish_flush(deflate, out, flush);
            }
            Ok(_) if stalled && out.len() < out.capacity() => {
                return if input.is_empty() {
                    finish_flush(deflate, out, flush)
                } else {
                    Err(DeflateFailed)
                };
            }
            Ok(_) => {}
        }
    }
}

/// How a sync flush ends: an empty stored block's LEN and NLEN.
const SYNC_MARKER: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Calls the compressor again, flushing, until a sync flush's output ends
/// as one does (each call may add an empty block, which is harmless); a
/// bounded number of times.
fn finish_flush(
    deflate: &mut Compress,
    out: &mut Vec<u8>,
    flush: FlushCompress,
) -> Result<(), DeflateFailed> {
    if !matches!(flush, FlushCompress::Sync | FlushCompress::Full) {
        return Ok(());
    }
    for _ in 0..64 {
        if out.ends_with(&SYNC_MARKER) {
            return Ok(());
        }
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(4096));
        }
        deflate
            .compress_vec(&[], out, flush)
            .map_err(|_| DeflateFailed)?;
    }
    Err(DeflateFailed)
}

/// Where the final block of a raw deflate stream starts (the bit index of
/// its BFINAL bit) and where it ends (the bit index after its last code),
/// bits counted from the least significant of the first byte. `None` if the
/// stream is malformed or has no final block.
pub fn final_block_header(data: &[u8]) -> Option<(usize, usize)> {
    let mut bits = Bits { data, at: 0 };
    loop {
        let header = bits.at;
        let bfinal = bits.take(1)?;
        match bits.take(2)? {
            0 => {
                bits.at = bits.at.div_ceil(8) * 8;
                let len = bits.take(16)? as usize;
                let nlen = bits.take(16)? as usize;
                if len != !nlen & 0xffff {
                    return None;
                }
                bits.at += len * 8;
                if bits.at > data.len() * 8 {
                    return None;
                }
            }
            1 => {
                let (lit, dist) = Huffman::fixed();
                bits.skip_codes(&lit, &dist)?;
            }
            2 => {
                let (lit, dist) = bits.dynamic_tables()?;
                bits.skip_codes(&lit, &dist)?;
            }
            _ => return None,
        }
        if bfinal == 1 {
            return Some((header, bits.at));
        }
    }
}

/// Bits of a deflate stream, least significant first.
struct Bits<'a> {
    data: &'a [u8],
    at: usize,
}

/// A canonical Huffman code as counts per length and symbols in code order
/// (the decoding of zlib's `puff.c`).
struct Huffman {
    count: [u16; 16],
    symbol: Vec<u16>,
}

const LENGTH_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// The order in which code length code lengths are sent.
const CODE_LENGTH_ORDER: [usize; 19] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

impl Huffman {
    /// `None` if the lengths over-subscribe the code.
    fn new(lengths: &[u8]) -> Option<Huffman> {
        let mut count = [0u16; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        let mut left: i32 = 1;
        for &c in &count[1..] {
            left = (left << 1) - i32::from(c);
            if left < 0 {
                return None;
            }
        }
        let mut offsets = [0u16; 16];
        for len in 1..15 {
            offsets[len + 1] = offsets[len] + count[len];
        }
        let mut symbol = vec![0u16; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[offsets[l as usize] as usize] = s as u16;
                offsets[l as usize] += 1;
            }
        }
        Some(Huffman { count, symbol })
    }

    fn fixed() -> (Huffman, Huffman) {
        let mut lit = [0u8; 288];
        lit[..144].fill(8);
        lit[144..256].fill(9);
        lit[256..280].fill(7);
        lit[280..].fill(8);
        // Both are complete codes: construction cannot fail.
        let lit = Huffman::new(&lit).unwrap_or(Huffman {
            count: [0; 16],
            symbol: Vec::new(),
        });
        let dist = Huffman::new(&[5u8; 30]).unwrap_or(Huffman {
            count: [0; 16],
            symbol: Vec::new(),
        });
        (lit, dist)
    }
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<u32> {
        if self.at + n > self.data.len() * 8 {
            return None;
        }
        let mut v = 0u32;
        for i in 0..n {
            let bit = self.at + i;
            v |= u32::from((self.data[bit / 8] >> (bit % 8)) & 1) << i;
        }
        self.at += n;
        Some(v)
    }

    fn decode(&mut self, h: &Huffman) -> Option<u16> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= self.take(1)? as i32;
            let count = i32::from(h.count[len]);
            if code - count < first {
                return h.symbol.get((index + code - first) as usize).copied();
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        None
    }

    /// Skips a block's codes up to and including its end-of-block code.
    fn skip_codes(&mut self, lit: &Huffman, dist: &Huffman) -> Option<()> {
        loop {
            let symbol = self.decode(lit)?;
            match symbol {
                0..=255 => {}
                256 => return Some(()),
                257..=285 => {
                    self.take(usize::from(LENGTH_EXTRA[usize::from(symbol - 257)]))?;
                    let d = self.decode(dist)?;
                    self.take(usize::from(*DIST_EXTRA.get(usize::from(d))?))?;
                }
                _ => return None,
            }
        }
    }

    fn dynamic_tables(&mut self) -> Option<(Huffman, Huffman)> {
        let nlen = self.take(5)? as usize + 257;
        let ndist = self.take(5)? as usize + 1;
        let ncode = self.take(4)? as usize + 4;
        if nlen > 286 || ndist > 30 {
            return None;
        }
        let mut code_lengths = [0u8; 19];
        for &i in &CODE_LENGTH_ORDER[..ncode] {
            code_lengths[i] = self.take(3)? as u8;
        }
        let codes = Huffman::new(&code_lengths)?;
        let mut lengths = vec![0u8; nlen + ndist];
        let mut i = 0;
        while i < nlen + ndist {
            let symbol = self.decode(&codes)?;
            let (value, repeat) = match symbol {
                0..=15 => (symbol as u8, 1),
                16 => (*lengths.get(i.checked_sub(1)?)?, 3 + self.take(2)? as usize),
                17 => (0, 3 + self.take(3)? as usize),
                18 => (0, 11 + self.take(7)? as usize),
                _ => return None,
            };
            if i + repeat > nlen + ndist {
                return None;
            }
            lengths[i..i + repeat].fill(value);
            i += repeat;
        }
        Some((
            Huffman::new(&lengths[..nlen])?,
            Huffman::new(&lengths[nlen..])?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn inflate(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    /// Pseudo-random bytes (xorshift), incompressible enough for stored blocks.
    fn noise(n: usize, mut seed: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect()
    }

    fn exposition_like(n: usize) -> Vec<u8> {
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(
                "aws_compute_optimizer_enrollment_status{{account_id=\"{:012}\",status=\"Active\"}} {}\n",
                100_000_000_000u64 + i as u64 * 7919,
                i % 2
            ));
        }
        s.into_bytes()
    }

    #[test]
    fn pieces_splice_in_any_order_into_one_stream() {
        // Fixed codes (tiny), dynamic codes (text), stored blocks (noise),
        // several blocks (large), and the empty piece.
        let texts: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"# EOF\n".to_vec(),
            exposition_like(2_000),
            noise(70_000, 7),
            exposition_like(60_000),
            Vec::new(),
            noise(13, 3),
        ];
        for order in [
            vec![0, 1, 2, 3, 4, 5, 6],
            vec![6, 4, 3, 2, 5, 1, 0],
            vec![3, 0, 4, 1, 6, 2],
        ] {
            let mut stream = Vec::new();
            let mut want = Vec::new();
            for &i in &order {
                stream.extend(piece(&texts[i]));
                want.extend_from_slice(&texts[i]);
            }
            stream.extend_from_slice(&FINAL_EMPTY_BLOCK);
            assert_eq!(inflate(&stream), want, "order {order:?}");
        }
    }

    #[test]
    fn every_piece_is_walked_not_remade_by_zlib() {
        // The fallback would still be correct, but larger: libdeflate's
        // output must be the one kept.
        for text in [exposition_like(3_000), noise(40_000, 11), b"x".to_vec()] {
            let whole = deflate_once(&text);
            let p = piece(&text);
            assert!(final_block_header(&whole).is_some());
            assert!(
                p.len() <= whole.len() + 6,
                "{} against {}",
                p.len(),
                whole.len()
            );
            assert_eq!(&p[p.len() - 4..], &[0, 0, 0xff, 0xff]);
        }
    }

    #[test]
    fn malformed_streams_are_refused_not_walked_past_their_end() {
        let whole = deflate_once(&exposition_like(500));
        for cut in [0, 1, whole.len() / 2, whole.len() - 1] {
            assert_eq!(final_block_header(&whole[..cut]), None, "cut at {cut}");
        }
        assert_eq!(final_block_header(&[0x07]), None, "BTYPE 11");
        assert_eq!(final_block_header(&[0x01, 0, 0, 0, 0]), None, "NLEN");
    }
}
