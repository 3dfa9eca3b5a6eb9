from gpu_supply.cli import main

main()
