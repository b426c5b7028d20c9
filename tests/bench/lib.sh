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

# The two anchors of figure a (tests/bench/run.sh on testbed 1, tests/bench/vm.sh
# on testbed 2): /bin/echo hi under systemd's Accept=yes, bare and with the
# sandboxing directives of shared/TESTBED.md (the resources of echo_toml).
bare_unit() {
    cat <<'UNIT'
[Unit]
Description=benchmark: /bin/echo under Accept=yes, no sandboxing
CollectMode=inactive-or-failed
[Service]
ExecStart=/bin/echo hi
StandardInput=socket
StandardOutput=socket
StandardError=journal
UNIT
}
sandboxed_unit() {
    cat <<'UNIT'
[Unit]
Description=benchmark: /bin/echo under Accept=yes with the sandboxing of shared/TESTBED.md
CollectMode=inactive-or-failed
[Service]
ExecStart=/bin/echo hi
StandardInput=socket
StandardOutput=socket
StandardError=journal
PrivateNetwork=yes
PrivateTmp=yes
ProtectSystem=strict
PrivateDevices=yes
PrivateIPC=yes
ProtectHostname=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
MemoryMax=64M
TasksMax=16
UNIT
}
