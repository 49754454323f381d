from decode.cli import main

main()
