//! The synthetic origin (`streamedge origin`): serves HLS/DASH files, simulates live.
