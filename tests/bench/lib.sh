# Shared by the benchmarks (tests/bench/run.sh, tests/bench/soak.sh).

# The inetd echo service both benchmarks measure: /bin/echo per connection,
# the same resources as the sandboxed systemd unit of run.sh's figure a.
echo_toml() { # WARM
    cat <<TOML
# benchmark: /bin/echo as an inetd service (tests/bench)
mode = "inetd"
exec = ["/bin/echo", "hi"]
warm = $1
max_connections = 64

[resources]
memory_max = "64M"
tasks_max = 16
TOML
}
