//! One seccomp program from a verdict per syscall number, searched as a
//! balanced tree of number ranges.
//!
//! Why not seccompiler's programs: they test the numbers one after the
//! other, so the allow-list alone was 1,515 instructions (plus 332 for the
//! deny-list and 10 for clone3, three programs). The kernel checks,
//! converts and JIT-compiles every program at each load, once per
//! container, and runs all three on every system call of the application,
//! walking up to the whole chain. Here the three are merged into one
//! program of a few hundred instructions whose search takes about ten
//! comparisons whatever the number.

use seccompiler::{BpfProgram, sock_filter};

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offset of `seccomp_data.nr`.
pub(super) const NR_OFFSET: u32 = 0;

/// Offset of the low 32 bits of `seccomp_data.args[arg]` (both supported
/// architectures are little-endian). Only the low half is compared: the
/// kernel reads these arguments as `unsigned int`, so high bits must not
/// change the verdict.
fn arg_low(arg: u8) -> u32 {
    16 + 8 * u32::from(arg)
}

/// A test on the low 32 bits of one argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ArgTest {
    /// The argument equals the value.
    Eq { arg: u8, value: u32 },
    /// The argument has any bit of the mask set.
    AnyBit { arg: u8, mask: u32 },
    /// The argument is none of the values.
    NoneOf { arg: u8, values: Vec<u32> },
}

/// What the program answers for one syscall number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// This return value (SECCOMP_RET_*), whatever the arguments.
    Ret(u32),
    /// The first test that holds gives its return value, `otherwise` if none.
    Args {
        tests: Vec<(ArgTest, u32)>,
        otherwise: u32,
    },
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Append to `prog` (which must leave nothing in the accumulator it needs):
/// load the syscall number, then find `runs` by binary search. `runs` are
/// `(first number, verdict)` in ascending order, the first starting at 0;
/// each covers the numbers up to the next one's first, the last up to
/// `u32::MAX`.
pub(super) fn search(prog: &mut BpfProgram, runs: &[(u32, Verdict)]) {
    prog.push(insn(LD_W_ABS, 0, 0, NR_OFFSET));
    tree(prog, runs);
}

fn tree(prog: &mut BpfProgram, runs: &[(u32, Verdict)]) {
    match runs {
        [] => {}
        [(_, verdict)] => emit_verdict(prog, verdict),
        _ => {
            let mid = runs.len() / 2;
            // number >= pivot: fall through to the JA, which jumps (32-bit
            // offset, so subtrees of any size) to the upper half; below it:
            // skip the JA into the lower half.
            prog.push(insn(JGE_K, 0, 1, runs[mid].0));
            let ja = prog.len();
            prog.push(insn(JA, 0, 0, 0));
            tree(prog, &runs[..mid]);
            prog[ja].k = (prog.len() - ja - 1) as u32;
            tree(prog, &runs[mid..]);
        }
    }
}

/// A verdict ends in returns on every path, so it may clobber the
/// accumulator.
fn emit_verdict(prog: &mut BpfProgram, verdict: &Verdict) {
    match verdict {
        Verdict::Ret(k) => prog.push(insn(RET_K, 0, 0, *k)),
        Verdict::Args { tests, otherwise } => {
            for (test, k) in tests {
                match test {
                    ArgTest::Eq { arg, value } => {
                        prog.push(insn(LD_W_ABS, 0, 0, arg_low(*arg)));
                        prog.push(insn(JEQ_K, 0, 1, *value));
                    }
                    ArgTest::AnyBit { arg, mask } => {
                        prog.push(insn(LD_W_ABS, 0, 0, arg_low(*arg)));
                        prog.push(insn(JSET_K, 0, 1, *mask));
                    }
                    ArgTest::NoneOf { arg, values } => {
                        prog.push(insn(LD_W_ABS, 0, 0, arg_low(*arg)));
                        // Equal to one of them: jump past the return.
                        let n = values.len();
                        for (i, v) in values.iter().enumerate() {
                            let skip = u8::try_from(n - i).expect("a handful of values");
                            prog.push(insn(JEQ_K, skip, 0, *v));
                        }
                    }
                }
                prog.push(insn(RET_K, 0, 0, *k));
            }
            prog.push(insn(RET_K, 0, 0, *otherwise));
        }
    }
}

/// Merge `verdict(nr)` for `0..=last` into runs for [`search`]; numbers
/// above `last` get `beyond`.
pub(super) fn runs(
    last: u32,
    verdict: impl Fn(u32) -> Verdict,
    beyond: Verdict,
) -> Vec<(u32, Verdict)> {
    let mut out: Vec<(u32, Verdict)> = Vec::new();
    let all = (0..=last).map(|nr| (nr, verdict(nr)));
    for (nr, v) in all.chain(last.checked_add(1).map(|nr| (nr, beyond))) {
        if out.last().is_none_or(|(_, prev)| *prev != v) {
            out.push((nr, v));
        }
    }
    out
}

/// A classic BPF interpreter for the instructions seccompiler and this
/// module emit, to compare programs without loading them.
#[cfg(test)]
pub(super) mod interp {
    use super::*;

    /// `seccomp_data` as the kernel lays it out.
    pub struct Data {
        pub nr: u32,
        pub arch: u32,
        pub args: [u64; 6],
    }

    impl Data {
        fn word(&self, off: u32) -> u32 {
            match off {
                0 => self.nr,
                4 => self.arch,
                8 | 12 => 0,
                o if (16..64).contains(&o) && o % 4 == 0 => {
                    let a = self.args[((o - 16) / 8) as usize];
                    if (o - 16) % 8 == 0 {
                        a as u32
                    } else {
                        (a >> 32) as u32
                    }
                }
                o => panic!("load outside seccomp_data: {o}"),
            }
        }
    }

    pub fn run(prog: &[sock_filter], d: &Data) -> u32 {
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        loop {
            let i = &prog[pc];
            pc += 1;
            let class = u32::from(i.code) & 0x07;
            let op = u32::from(i.code) & 0xf0;
            let src_x = u32::from(i.code) & 0x08 != 0;
            match class {
                libc::BPF_LD => match u32::from(i.code) & 0xe0 {
                    libc::BPF_ABS => a = d.word(i.k),
                    libc::BPF_IMM => a = i.k,
                    libc::BPF_MEM => a = mem[i.k as usize],
                    m => panic!("ld mode {m:#x}"),
                },
                libc::BPF_LDX => match u32::from(i.code) & 0xe0 {
                    libc::BPF_IMM => x = i.k,
                    libc::BPF_MEM => x = mem[i.k as usize],
                    m => panic!("ldx mode {m:#x}"),
                },
                libc::BPF_ST => mem[i.k as usize] = a,
                libc::BPF_STX => mem[i.k as usize] = x,
                libc::BPF_ALU => {
                    let v = if src_x { x } else { i.k };
                    a = match op {
                        libc::BPF_ADD => a.wrapping_add(v),
                        libc::BPF_SUB => a.wrapping_sub(v),
                        libc::BPF_AND => a & v,
                        libc::BPF_OR => a | v,
                        libc::BPF_RSH => a >> v,
                        libc::BPF_LSH => a << v,
                        o => panic!("alu op {o:#x}"),
                    };
                }
                libc::BPF_JMP => {
                    let v = if src_x { x } else { i.k };
                    let taken = match op {
                        libc::BPF_JA => {
                            pc += i.k as usize;
                            continue;
                        }
                        libc::BPF_JEQ => a == v,
                        libc::BPF_JGT => a > v,
                        libc::BPF_JGE => a >= v,
                        libc::BPF_JSET => a & v != 0,
                        o => panic!("jmp op {o:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                libc::BPF_RET => return i.k,
                libc::BPF_MISC => match op {
                    0x00 => x = a,
                    0x80 => a = x,
                    o => panic!("misc op {o:#x}"),
                },
                c => panic!("class {c:#x}"),
            }
        }
    }

    /// The kernel's verdict over several programs, last loaded first: the
    /// lowest action wins (signed, so KILL_PROCESS lowest), the first seen
    /// among equals.
    pub fn combined(progs: &[BpfProgram], d: &Data) -> u32 {
        let mut ret = libc::SECCOMP_RET_ALLOW;
        for p in progs.iter().rev() {
            let cur = run(p, d);
            let action = |r: u32| (r & libc::SECCOMP_RET_ACTION_FULL) as i32;
            if action(cur) < action(ret) {
                ret = cur;
            }
        }
        ret
    }
}

#[cfg(test)]
mod tests {
    use super::interp::{Data, run};
    use super::*;

    fn data(nr: u32, args: [u64; 6]) -> Data {
        Data { nr, arch: 0, args }
    }

    #[test]
    fn search_finds_every_run() {
        let verdict = |nr: u32| Verdict::Ret(if nr % 7 < 3 { 1 } else { 2 + nr / 100 });
        let runs = runs(1000, verdict, Verdict::Ret(99));
        let mut prog = Vec::new();
        search(&mut prog, &runs);
        for nr in 0..1100 {
            let want = match verdict(nr) {
                _ if nr > 1000 => 99,
                Verdict::Ret(k) => k,
                Verdict::Args { .. } => unreachable!(),
            };
            assert_eq!(run(&prog, &data(nr, [0; 6])), want, "nr {nr}");
        }
        assert_eq!(run(&prog, &data(u32::MAX, [0; 6])), 99);
    }

    #[test]
    fn argument_tests_compare_the_low_half() {
        let v = Verdict::Args {
            tests: vec![
                (ArgTest::Eq { arg: 1, value: 5 }, 10),
                (ArgTest::AnyBit { arg: 0, mask: 0x30 }, 11),
                (
                    ArgTest::NoneOf {
                        arg: 2,
                        values: vec![0, 7],
                    },
                    12,
                ),
            ],
            otherwise: 13,
        };
        let runs = runs(
            3,
            |nr| if nr == 2 { v.clone() } else { Verdict::Ret(1) },
            Verdict::Ret(1),
        );
        let mut prog = Vec::new();
        search(&mut prog, &runs);
        let at = |args| run(&prog, &data(2, args));
        assert_eq!(at([0, 5, 0, 0, 0, 0]), 10);
        assert_eq!(at([0, 5 | 1 << 32, 0, 0, 0, 0]), 10);
        assert_eq!(at([0x10, 4, 0, 0, 0, 0]), 11);
        assert_eq!(at([1 << 36, 4, 0, 0, 0, 0]), 13);
        assert_eq!(at([0, 4, 3, 0, 0, 0]), 12);
        assert_eq!(at([0, 4, 7 | 1 << 40, 0, 0, 0]), 13);
        assert_eq!(run(&prog, &data(1, [0, 5, 0, 0, 0, 0])), 1);
    }
}
