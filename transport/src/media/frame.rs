//! The media frame: a channel byte and an opaque payload.

/// A media frame: `channel(1) | payload`. The datagram or stream delimits it; there is no
/// version and no length. An empty frame is malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaFrame<'a> {
    /// The channel (0–15 the core's, 16–255 the application's).
    pub channel: u8,
    /// The opaque payload.
    pub payload: &'a [u8],
}

/// A media frame with no channel byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed media frame: empty, no channel byte")]
pub struct BadMediaFrame;

impl<'a> MediaFrame<'a> {
    /// Parses a frame (any channel: receivers decide what reserved ones mean).
    pub fn decode(frame: &'a [u8]) -> Result<Self, BadMediaFrame> {
        let (&channel, payload) = frame.split_first().ok_or(BadMediaFrame)?;
        Ok(Self { channel, payload })
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + self.payload.len());
        out.push(self.channel);
        out.extend_from_slice(self.payload);
        out
    }
}
