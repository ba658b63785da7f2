//! A minimal tokio driver: moves bytes between a socket and a [`Connection`].
//!
//! One task owns the socket. It reads into a buffer, feeds the engine, and writes everything
//! the engine produced in one `write_all` (many frames per syscall). Applications build their
//! select loop around [`Transport::read_into`] and [`Transport::flush`].

use crate::connection::{Connection, Event};
use crate::EndpointError;
use bytes::BytesMut;
use std::io;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::sleep_until;

/// The largest read buffer reservation, reached while reads keep filling the buffer.
pub const READ_CHUNK: usize = 64 * 1024;
/// The smallest reservation, where an idle connection's buffer settles.
const MIN_READ_CHUNK: usize = 1024;

/// A socket plus its read buffer.
///
/// The buffer adapts: a read that fills it doubles the next reservation (up to
/// [`READ_CHUNK`]), a read of less than a quarter halves it, and an emptied buffer much larger
/// than the reservation is given back. A busy connection reads 64 KiB at a time; an idle one
/// holds 1 KiB, so that thousands of idle connections cost little memory.
#[derive(Debug)]
pub struct Transport<S> {
    io: S,
    /// Bytes read but not yet consumed by the engine.
    pub read_buf: BytesMut,
    chunk: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Transport<S> {
    /// Wraps a socket.
    pub fn new(io: S) -> Self {
        Transport { io, read_buf: BytesMut::new(), chunk: MIN_READ_CHUNK }
    }

    /// Reads once into the buffer. Returns 0 at end of stream. Cancel-safe: a cancelled read
    /// loses no bytes (tokio's `read_buf` only advances after data is copied).
    pub async fn read_into(&mut self) -> io::Result<usize> {
        if self.read_buf.is_empty() && self.read_buf.capacity() > 4 * self.chunk {
            self.read_buf = BytesMut::new();
        }
        if self.read_buf.capacity() - self.read_buf.len() < self.chunk / 4 {
            self.read_buf.reserve(self.chunk);
        }
        let spare = self.read_buf.capacity() - self.read_buf.len();
        let n = self.io.read_buf(&mut self.read_buf).await?;
        if n >= spare {
            self.chunk = (self.chunk * 2).min(READ_CHUNK);
        } else if n < self.chunk / 4 {
            self.chunk = (self.chunk / 2).max(MIN_READ_CHUNK);
        }
        Ok(n)
    }

    /// Feeds buffered input to the engine.
    pub fn feed(&mut self, conn: &mut Connection) -> Result<(), crate::EndpointError> {
        conn.feed(&mut self.read_buf, Instant::now())
    }

    /// Writes all pending output of the engine. Not cancel-safe: run it to completion.
    pub async fn flush(&mut self, conn: &mut Connection) -> io::Result<()> {
        if conn.has_output() {
            self.io.write_all(conn.output()).await?;
            self.io.flush().await?;
            // clear() keeps the allocation for the next batch of frames.
            conn.output().clear();
            conn.note_sent(Instant::now());
        }
        Ok(())
    }

    /// The simplest driver loop, for code that only reacts to the peer (tests, benchmarks, small
    /// tools): writes pending output, returns the next event, and otherwise reads, sending
    /// heartbeats and enforcing the idle timeout when they fall due. When the engine fails it
    /// has usually written a `close` with the precise condition; that is flushed before the
    /// error is returned. The end of the stream is an `UnexpectedEof` I/O error.
    pub async fn next_event(&mut self, conn: &mut Connection) -> Result<Event, EndpointError> {
        loop {
            self.flush(conn).await?;
            if let Some(e) = conn.poll_event() {
                return Ok(e);
            }
            if conn.is_done() {
                return Err(EndpointError::IllegalState("connection is done"));
            }
            let step = match conn.next_timeout() {
                Some(due) => tokio::select! {
                    r = self.read_into() => self.feed_read(r, conn),
                    _ = sleep_until(due.into()) => conn.handle_timeout(Instant::now()),
                },
                None => {
                    let r = self.read_into().await;
                    self.feed_read(r, conn)
                }
            };
            if let Err(e) = step {
                let _ = self.flush(conn).await;
                return Err(e);
            }
        }
    }

    fn feed_read(&mut self, read: io::Result<usize>, conn: &mut Connection) -> Result<(), EndpointError> {
        if read? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        self.feed(conn)
    }

    /// Shuts the write side down.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        self.io.shutdown().await
    }

    /// The socket.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }
}
