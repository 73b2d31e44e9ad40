//! The `rocketmq-ha` command (being written: master, slave and demo subcommands).

fn main() {
    eprintln!("rocketmq-ha: the command-line program is not finished yet");
    std::process::exit(2);
}
