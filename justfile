# Recipes delegate to ./dev.sh so that people without `just` run exactly the same commands.

setup:
    ./dev.sh setup

demo *ARGS:
    ./dev.sh demo {{ARGS}}

test *ARGS:
    ./dev.sh test {{ARGS}}

lint:
    ./dev.sh lint

bench *ARGS:
    ./dev.sh bench {{ARGS}}
