//! The error a scaler returns, and the gRPC status each kind becomes.

use std::fmt;

/// What went wrong, as far as the caller (the KEDA operator) is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The trigger metadata is missing a key, or a value does not parse, or names something that
    /// does not exist. Retrying will not help until the ScaledObject changes.
    /// gRPC `INVALID_ARGUMENT`.
    InvalidMetadata,
    /// The event source cannot be reached right now (connection refused, timed out, dropped).
    /// Retrying later may help. gRPC `UNAVAILABLE`.
    Unavailable,
    /// The metric asked for is not one this scaler serves. gRPC `NOT_FOUND`.
    NotFound,
    /// Anything else: the source answered with an error, or the scaler has a bug.
    /// gRPC `INTERNAL`.
    Internal,
}

/// A scaler's error: a kind (which decides the gRPC status) and a message for the operator's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The result type of [`Scaler`](crate::Scaler) methods.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The trigger metadata is wrong (`INVALID_ARGUMENT`).
    pub fn invalid_metadata(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidMetadata, message)
    }

    /// The event source is down or unreachable (`UNAVAILABLE`).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// The metric asked for is unknown (`NOT_FOUND`).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Any other failure (`INTERNAL`).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message of this error.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The gRPC status code this error is answered with.
    pub fn code(&self) -> tonic::Code {
        match self.kind {
            ErrorKind::InvalidMetadata => tonic::Code::InvalidArgument,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ErrorKind::InvalidMetadata => "invalid metadata",
            ErrorKind::Unavailable => "source unavailable",
            ErrorKind::NotFound => "not found",
            ErrorKind::Internal => "internal error",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.code(), error.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_maps_to_its_grpc_code_and_keeps_the_message() {
        let cases = [
            (Error::invalid_metadata("m1"), tonic::Code::InvalidArgument),
            (Error::unavailable("m2"), tonic::Code::Unavailable),
            (Error::not_found("m3"), tonic::Code::NotFound),
            (Error::internal("m4"), tonic::Code::Internal),
        ];
        for (error, code) in cases {
            let message = error.message().to_owned();
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), message);
        }
    }

    #[test]
    fn display_names_the_kind() {
        assert_eq!(
            Error::unavailable("connection refused").to_string(),
            "source unavailable: connection refused"
        );
    }
}
