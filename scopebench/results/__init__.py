"""Result records (schema v2) and their store, the leaderboard built from them, and the plots."""
