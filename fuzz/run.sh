#!/usr/bin/env bash
# Builds the fuzz targets and runs each for N seconds (default 30) on its checked-in seeds.
#
#   fuzz/run.sh [seconds]            all targets
#   TARGETS="role_rules" fuzz/run.sh 600
#   MERGE=1 fuzz/run.sh 300          then merge what was found into corpus/<target>
#   SEED=1 fuzz/run.sh 30            a fixed libFuzzer seed (what `make test` uses, so CI replays
#                                    the same inputs every run; a new find comes from longer runs)
#
# Exits non-zero if any target crashes (or a property assertion fails); the input is saved in
# fuzz/artifacts/<target>/ and reproduced with `cargo fuzz run -s none -a <target> <file>`.
# New inputs go to fuzz/work/<target>/ (ignored by git), never into the checked-in corpus.
set -uo pipefail

secs=${1:-30}
cd "$(dirname "$0")"
read -ra targets <<<"${TARGETS:-token_verify compact_parse jwks_parse discovery_doc role_rules cosmos_request}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --version 0.13.2 --locked || exit 1
fi
# No sanitizer: the core forbids unsafe code, so ASan would only slow it down (and needs
# nightly). Debug assertions (-a) keep overflow checks and debug_assert!s on.
flags=(-s none -a)
cargo fuzz build "${flags[@]}" || exit 1

failed=()
for t in "${targets[@]}"; do
    mkdir -p "work/$t" "corpus/$t" "artifacts/$t"
    echo "== $t: ${secs}s"
    seed=()
    [ -n "${SEED:-}" ] && seed=(-seed="$SEED")
    # A fixed seed replays the same mutations only from the same starting corpus.
    [ -n "${SEED:-}" ] && rm -rf "work/$t" && mkdir -p "work/$t"
    cargo fuzz run "${flags[@]}" "$t" "work/$t" "corpus/$t" -- \
        -max_total_time="$secs" -print_final_stats=1 "${seed[@]}" >"work/$t.log" 2>&1
    status=$?
    grep -E '^#[0-9]+[[:space:]]+DONE|stat::average_exec_per_sec' "work/$t.log" | tail -2
    if [ "$status" -ne 0 ]; then
        failed+=("$t")
        grep -E -A30 'panicked|ERROR: libFuzzer|SUMMARY' "work/$t.log" | head -40
    elif [ -n "${MERGE:-}" ]; then
        cargo fuzz run "${flags[@]}" "$t" "corpus/$t" "work/$t" -- -merge=1 >>"work/$t.log" 2>&1
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/work/*.log)"
    exit 1
fi
echo "all ${#targets[@]} targets ran ${secs}s without a failure"
