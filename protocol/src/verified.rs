//! [`Verified<T>`]: a value whose signature and content were checked at the boundary. Only this
//! crate's verification functions construct one, so unverified data cannot reach code that
//! takes a `Verified<T>` by mistake.

use std::ops::Deref;

/// A value that passed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified<T>(T);

impl<T> Verified<T> {
    /// Marks `value` as verified. Only verification code calls this.
    pub(crate) fn new(value: T) -> Self {
        Self(value)
    }

    /// The verified value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
