//! The sandbox's seccomp program, compiled as a binary search over system call numbers.
//!
//! Written here rather than by seccompiler (whose types it uses, and whose `apply_filter` loads
//! it): seccompiler emits one comparison after another, so an allowed call runs through about a
//! hundred instructions, and when a filter is loaded the kernel runs it for every system call
//! number to build its cache of calls always allowed. That was about 0.1 ms of every command's
//! start, and two filters were loaded (one for `clone3`). One program whose calls are found in a
//! handful of comparisons costs a tenth of it. The rules themselves are the sandbox's
//! (`sandbox::seccomp_program`); a test checks that this program answers every call as
//! seccompiler's two did.

use seccompiler::{BpfProgram, sock_filter};
use std::collections::BTreeMap;

/// What the program answers for one system call; a call it does not name is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Refused with this errno.
    Refuse(u32),
    /// Refused with `EPERM` when its first argument (its low 32 bits) is this value.
    RefuseIfArgIs(u32),
    /// Refused with `EPERM` when its first argument has any of these bits.
    RefuseIfArgHas(u32),
    /// Refused with `EPERM` when its second argument (its low 32 bits) is one of these values:
    /// the requests of `ioctl`, which the kernel reads as a 32-bit `unsigned int`.
    RefuseIfArg1In(&'static [u32]),
}

/// The program would not fit the jumps of classic BPF (255 instructions at most).
#[derive(Debug)]
pub(crate) struct TooLarge;

const LD_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JGE: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
const JSET: u16 = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET: u16 = 0x06; // BPF_RET | BPF_K
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const ARG1_LOW: u32 = 24;
/// Calls with this bit are the x32 ABI's, on x86_64.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Calls compared one after another at the leaves of the search.
const LEAF: usize = 4;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The `AUDIT_ARCH_*` value of the architecture improv was built for; `None` where the sandbox
/// has no seccomp program.
pub(crate) fn audit_arch() -> Option<u32> {
    match std::env::consts::ARCH {
        "x86_64" => Some(0xc000_003e),
        "aarch64" => Some(0xc000_00b7),
        "riscv64" => Some(0xc000_00f3),
        _ => None,
    }
}

/// The program for `rules` on the architecture `arch` (its `AUDIT_ARCH_*`): another
/// architecture's calls kill the process, x32 calls are refused on x86_64, the calls of `rules`
/// get their verdict, every other call is allowed.
pub(crate) fn compile(arch: u32, rules: &BTreeMap<u32, Verdict>) -> Result<BpfProgram, TooLarge> {
    let mut program = vec![
        stmt(LD_ABS, ARCH),
        jump(JEQ, arch, 1, 0),
        stmt(RET, RET_KILL_PROCESS),
        stmt(LD_ABS, NR),
    ];
    if std::env::consts::ARCH == "x86_64" {
        program.push(jump(JGE, X32_SYSCALL_BIT, 0, 1));
        program.push(stmt(RET, RET_ERRNO | libc::EPERM as u32));
    }
    let rules: Vec<(u32, Verdict)> = rules.iter().map(|(nr, v)| (*nr, *v)).collect();
    program.extend(search(&rules)?);
    Ok(program)
}

/// Finds the loaded call number among `rules` (sorted): halves them while more than [`LEAF`]
/// remain, then compares one by one. Every path ends in a return.
fn search(rules: &[(u32, Verdict)]) -> Result<Vec<sock_filter>, TooLarge> {
    if rules.len() <= LEAF {
        let mut code = Vec::new();
        for (nr, verdict) in rules {
            let block = answer(*verdict)?;
            let skip = u8::try_from(block.len()).map_err(|_| TooLarge)?;
            code.push(jump(JEQ, *nr, 0, skip));
            code.extend(block);
        }
        code.push(stmt(RET, RET_ALLOW));
        return Ok(code);
    }
    let (low, high) = rules.split_at(rules.len() / 2);
    let high_code = search(high)?;
    let skip = u8::try_from(high_code.len()).map_err(|_| TooLarge)?;
    let mut code = vec![jump(JGE, high[0].0, 0, skip)];
    code.extend(high_code);
    code.extend(search(low)?);
    Ok(code)
}

/// The instructions that answer one call, all ending in a return.
fn answer(verdict: Verdict) -> Result<Vec<sock_filter>, TooLarge> {
    let eperm = stmt(RET, RET_ERRNO | libc::EPERM as u32);
    Ok(match verdict {
        Verdict::Refuse(errno) => vec![stmt(RET, RET_ERRNO | errno)],
        Verdict::RefuseIfArgIs(value) => vec![
            stmt(LD_ABS, ARG0_LOW),
            jump(JEQ, value, 0, 1),
            eperm,
            stmt(RET, RET_ALLOW),
        ],
        Verdict::RefuseIfArgHas(bits) => vec![
            stmt(LD_ABS, ARG0_LOW),
            jump(JSET, bits, 0, 1),
            eperm,
            stmt(RET, RET_ALLOW),
        ],
        Verdict::RefuseIfArg1In(values) => {
            // Each match jumps over the later comparisons and the allow to the refusal.
            let mut code = vec![stmt(LD_ABS, ARG1_LOW)];
            for (i, value) in values.iter().enumerate() {
                let over = u8::try_from(values.len() - i).map_err(|_| TooLarge)?;
                code.push(jump(JEQ, *value, over, 0));
            }
            code.push(stmt(RET, RET_ALLOW));
            code.push(eperm);
            code
        }
    })
}

/// Runs `program` on a call with the first two arguments `args` as the kernel would (the
/// instructions compiled here and by seccompiler): its return value.
#[cfg(test)]
pub(crate) fn run(program: &[sock_filter], arch: u32, nr: u32, args: [u64; 2]) -> u32 {
    let data = |offset: u32| match offset {
        NR => nr,
        ARCH => arch,
        ARG0_LOW => args[0] as u32,
        20 => (args[0] >> 32) as u32,
        ARG1_LOW => args[1] as u32,
        28 => (args[1] >> 32) as u32,
        _ => 0,
    };
    let (mut pc, mut a) = (0usize, 0u32);
    loop {
        let i = &program[pc];
        pc += 1;
        let taken = match i.code {
            LD_ABS => {
                a = data(i.k);
                continue;
            }
            RET => return i.k,
            0x05 => {
                // BPF_JMP | BPF_JA
                pc += i.k as usize;
                continue;
            }
            0x25 => a > i.k, // BPF_JGT
            JEQ => a == i.k,
            JGE => a >= i.k,
            JSET => a & i.k != 0,
            0x54 => {
                // BPF_ALU | BPF_AND | BPF_K
                a &= i.k;
                continue;
            }
            other => panic!("instruction {other:#x} not known to this test"),
        };
        pc += usize::from(if taken { i.jt } else { i.jf });
    }
}
