//! What both sides need of their own generated bindings of the WIT, written once: the host
//! (wasmtime's `bindgen!`) and the plugins (wit-bindgen) each generate their own Rust types for
//! the contract's `error` and `operation`, and [`wit_glue!`](crate::wit_glue) gives both the same
//! constructors, accessors and conversions to [`Operation`](crate::Operation).

/// Implements on a side's generated `error` variant and `operation` enum: `Error::denied(…)`,
/// `invalid`, `not_found`, `unsupported`, `failed`, `kind()`, `message()`; and `From` both ways
/// between the `operation` enum and [`Operation`](crate::Operation), with `as_str()` and `Display`.
#[macro_export]
macro_rules! wit_glue {
    (error: $error:ty, operation: $operation:ty $(,)?) => {
        impl $error {
            pub fn denied(message: impl Into<String>) -> Self {
                Self::Denied(message.into())
            }
            pub fn not_found(message: impl Into<String>) -> Self {
                Self::NotFound(message.into())
            }
            pub fn invalid(message: impl Into<String>) -> Self {
                Self::Invalid(message.into())
            }
            pub fn unsupported(message: impl Into<String>) -> Self {
                Self::Unsupported(message.into())
            }
            pub fn failed(message: impl Into<String>) -> Self {
                Self::Failed(message.into())
            }

            /// `denied`, `not-found`, … as the WIT spells the case.
            pub fn kind(&self) -> &'static str {
                match self {
                    Self::Denied(_) => "denied",
                    Self::NotFound(_) => "not-found",
                    Self::Invalid(_) => "invalid",
                    Self::Unsupported(_) => "unsupported",
                    Self::Timeout(_) => "timeout",
                    Self::Failed(_) => "failed",
                }
            }

            /// The message, whatever the kind.
            pub fn message(&self) -> &str {
                match self {
                    Self::Denied(m)
                    | Self::NotFound(m)
                    | Self::Invalid(m)
                    | Self::Unsupported(m)
                    | Self::Timeout(m)
                    | Self::Failed(m) => m,
                }
            }
        }

        impl $operation {
            fn to_contract(self) -> $crate::Operation {
                match self {
                    Self::FirstDeploy => $crate::Operation::FirstDeploy,
                    Self::Redeploy => $crate::Operation::Redeploy,
                    Self::AutoDeploy => $crate::Operation::AutoDeploy,
                    Self::Backup => $crate::Operation::Backup,
                    Self::Restore => $crate::Operation::Restore,
                }
            }

            fn from_contract(operation: $crate::Operation) -> Self {
                match operation {
                    $crate::Operation::FirstDeploy => Self::FirstDeploy,
                    $crate::Operation::Redeploy => Self::Redeploy,
                    $crate::Operation::AutoDeploy => Self::AutoDeploy,
                    $crate::Operation::Backup => Self::Backup,
                    $crate::Operation::Restore => Self::Restore,
                }
            }

            /// The name as the WIT, the API and the state spell it, e.g. `first-deploy`.
            pub fn as_str(self) -> &'static str {
                self.to_contract().as_str()
            }
        }

        impl From<$operation> for $crate::Operation {
            fn from(operation: $operation) -> Self {
                operation.to_contract()
            }
        }

        impl From<$crate::Operation> for $operation {
            fn from(operation: $crate::Operation) -> Self {
                <$operation>::from_contract(operation)
            }
        }

        impl ::std::fmt::Display for $operation {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
