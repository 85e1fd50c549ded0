//! The edge stream's framing: `uvarint(len) | packet`, read and written in batches.

use super::*;

/// Decodes the stream's `uvarint(len)` packet prefix one byte at a time, refusing a length
/// over [`MAX_PACKET_LEN`] as soon as it is certain, so a hostile prefix costs nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct PrefixDecoder {
    pub(super) value: u64,
    pub(super) bytes: u32,
}

/// A stream prefix announced more than one packet, or did not end within ten bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("stream frame prefix exceeds the {MAX_PACKET_LEN}-byte packet")]
pub struct PrefixTooLarge;

impl PrefixDecoder {
    /// Feeds one byte: `Ok(Some(len))` when the prefix is complete, `Ok(None)` for more.
    pub fn push(&mut self, byte: u8) -> Result<Option<usize>, PrefixTooLarge> {
        // A tenth byte above 1 would shift bits out of the u64 (and the value past any packet).
        if self.bytes >= 10 || (self.bytes == 9 && byte > 1) {
            return Err(PrefixTooLarge);
        }
        self.value |= u64::from(byte & 0x7f) << (7 * self.bytes);
        self.bytes += 1;
        if self.value > MAX_PACKET_LEN as u64 {
            return Err(PrefixTooLarge);
        }
        if byte < 0x80 {
            // value <= MAX_PACKET_LEN, which fits any usize.
            return usize::try_from(self.value)
                .map(Some)
                .map_err(|_| PrefixTooLarge);
        }
        Ok(None)
    }
}

/// Reads `uvarint(len) | packet` frames from an edge's stream. Takes quinn's received chunks
/// as they are (no copy) and copies each payload byte exactly once, into its pooled packet.
pub(super) struct FrameReader {
    pub(super) recv: quinn::RecvStream,
    pub(super) pending: bytes::Bytes,
}

impl FrameReader {
    pub(super) fn new(recv: quinn::RecvStream) -> Self {
        Self {
            recv,
            pending: bytes::Bytes::new(),
        }
    }

    /// Refills `pending`; false at the end of the stream.
    pub(super) async fn fill(&mut self) -> Result<bool, CloseReason> {
        match self.recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                self.pending = chunk.bytes;
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(_) => Err(CloseReason::Lost),
        }
    }

    /// The next frame; `Ok(None)` on a clean end of stream between frames.
    pub(super) async fn read_frame(&mut self) -> Result<Option<Packet>, CloseReason> {
        let mut prefix = PrefixDecoder::default();
        let mut started = false;
        let len = loop {
            let Some(&byte) = self.pending.first() else {
                if !self.fill().await? {
                    return if started {
                        Err(CloseReason::Lost)
                    } else {
                        Ok(None)
                    };
                }
                continue;
            };
            bytes::Buf::advance(&mut self.pending, 1);
            started = true;
            match prefix.push(byte) {
                Ok(Some(len)) => break len,
                Ok(None) => {}
                Err(PrefixTooLarge) => return Err(CloseReason::ProtocolViolation),
            }
        };
        let class = SizeClass::for_len(len).ok_or(CloseReason::ProtocolViolation)?;
        let mut p = Packet::of_class(class);
        let mut filled = 0;
        while filled < len {
            if self.pending.is_empty() && !self.fill().await? {
                return Err(CloseReason::Lost);
            }
            let n = (len - filled).min(self.pending.len());
            p.buf_mut()[filled..filled + n].copy_from_slice(&self.pending[..n]);
            bytes::Buf::advance(&mut self.pending, n);
            filled += n;
        }
        p.set_len(len).map_err(|_| CloseReason::ProtocolViolation)?;
        Ok(Some(p))
    }
}

/// Most frames one write hands to quinn: a busy edge's queue is written in batches, one await
/// per batch instead of one per frame.
pub(super) const WRITE_BATCH: usize = 16;

/// Writes each packet as `uvarint(len) | packet`, handing the pooled buffers themselves to
/// quinn (no copy): each returns to the pool once quinn has sent it.
pub(super) async fn write_frames(
    send: &mut quinn::SendStream,
    chunks: &mut Vec<bytes::Bytes>,
    packets: impl IntoIterator<Item = Packet>,
) -> Result<(), quinn::WriteError> {
    chunks.clear();
    for packet in packets {
        let mut prefix = [0u8; 10];
        let mut w = nodenet_wire::Writer::new(&mut prefix);
        // Ten bytes always hold a uvarint.
        let _ = w.put_uvarint(packet.len() as u64);
        let n = w.finish();
        chunks.push(bytes::Bytes::copy_from_slice(&prefix[..n]));
        chunks.push(bytes::Bytes::from_owner(packet));
    }
    let result = send.write_all_chunks(chunks).await;
    chunks.clear();
    result
}
