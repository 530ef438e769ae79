//! Exact Euclidean distance transforms (in progress).
