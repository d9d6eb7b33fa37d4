"""Train ResNet50 on CIFAR-10 with MindSpore: python train.py --data_url=DIR --output_url=DIR."""

from trainer import main

if __name__ == "__main__":
    main()
